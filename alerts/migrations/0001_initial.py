# The alert models were in taskops until alerting became its own app. Their tables keep
# taskops' names (db_table), so this migration takes the models into alerts' state and
# leaves the tables and their rows as they are (taskops 0004 dropped them from taskops'
# state only). Two things depend on the database's history:
# - AlertRule.slack_workspace_id exists where taskops 0003 ran before it was edited (see
#   there); on a new database it is added here, with the same foreign key and index.
# - The content types (and with them permissions and admin log entries) of a database
#   that had the models under taskops move to alerts.

import django.db.models.deletion
from django.db import migrations, models

MODELS = ("alertrule", "alertincident", "alertdelivery")


def slack_workspace_add_if_missing(apps, schema_editor):
    rule = apps.get_model("alerts", "AlertRule")
    field = rule._meta.get_field("slack_workspace")
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        columns = connection.introspection.get_table_description(cursor, rule._meta.db_table)
    if field.column not in {column.name for column in columns}:
        schema_editor.add_field(rule, field)


def content_types_move(apps, schema_editor, *, source="taskops", target="alerts"):
    content_type = apps.get_model("contenttypes", "ContentType")
    types = content_type.objects.using(schema_editor.connection.alias)
    for model in MODELS:
        if not types.filter(app_label=target, model=model).exists():
            types.filter(app_label=source, model=model).update(app_label=target)


def content_types_move_back(apps, schema_editor):
    content_types_move(apps, schema_editor, source="alerts", target="taskops")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("integrations", "0002_email_ingestion"),
        ("taskops", "0004_alerts_moved_to_alerts_app"),
        ("tickets", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AlertRule',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=200)),
                        ('kind', models.CharField(choices=[('task_failures', 'Task failures'), ('integration_error', 'Integration in error')], default='task_failures', max_length=32)),
                        ('task_pattern', models.CharField(blank=True, default='', help_text='task_failures: fnmatch pattern of task names, e.g. integrations.tasks.*', max_length=255)),
                        ('integration', models.CharField(choices=[('any', 'Mailboxes and Slack workspaces'), ('mailbox', 'Mailboxes'), ('slack', 'Slack workspaces')], default='any', help_text='integration_error: which integrations to watch', max_length=16)),
                        ('threshold', models.PositiveIntegerField(default=1, help_text='failures (or integrations in error) that make the rule fire')),
                        ('window_minutes', models.PositiveIntegerField(default=15, help_text='task_failures: failures counted over this many minutes; integration_error: how long an integration must have been in error')),
                        ('slack_channel', models.CharField(blank=True, default='', help_text='channel id (C0123…) or #name', max_length=80)),
                        ('email_recipients', models.JSONField(blank=True, default=list)),
                        ('enabled', models.BooleanField(default=True)),
                        ('last_evaluated_at', models.DateTimeField(blank=True, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('organization', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='alert_rules', to='tickets.organization')),
                        ('slack_workspace', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='alert_rules', to='integrations.slackworkspace')),
                    ],
                    options={
                        'db_table': 'taskops_alertrule',
                        'ordering': ['organization_id', 'name'],
                    },
                ),
                migrations.CreateModel(
                    name='AlertIncident',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('state', models.CharField(choices=[('open', 'Open'), ('resolved', 'Resolved')], default='open', max_length=16)),
                        ('count', models.PositiveIntegerField(default=0)),
                        ('details', models.JSONField(blank=True, default=dict)),
                        ('summary', models.TextField(blank=True, default='')),
                        ('opened_at', models.DateTimeField()),
                        ('last_seen_at', models.DateTimeField()),
                        ('resolved_at', models.DateTimeField(blank=True, null=True)),
                        ('resolution', models.CharField(blank=True, default='', max_length=64)),
                        ('organization', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='alert_incidents', to='tickets.organization')),
                        ('rule', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='incidents', to='alerts.alertrule')),
                    ],
                    options={
                        'db_table': 'taskops_alertincident',
                        'ordering': ['-opened_at', '-id'],
                    },
                ),
                migrations.CreateModel(
                    name='AlertDelivery',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('channel', models.CharField(choices=[('slack', 'Slack'), ('email', 'E-mail')], max_length=16)),
                        ('target', models.TextField()),
                        ('kind', models.CharField(choices=[('fired', 'Fired'), ('recovered', 'Recovered')], max_length=16)),
                        ('subject', models.CharField(blank=True, default='', max_length=255)),
                        ('text', models.TextField()),
                        ('state', models.CharField(choices=[('pending', 'Pending'), ('sending', 'Sending'), ('retrying', 'Failed, will retry'), ('sent', 'Sent'), ('failed', 'Failed')], default='pending', max_length=16)),
                        ('attempts', models.PositiveIntegerField(default=0)),
                        ('error', models.TextField(blank=True, default='', help_text="the last failed attempt's error")),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('last_attempt_at', models.DateTimeField(blank=True, null=True)),
                        ('sent_at', models.DateTimeField(blank=True, null=True)),
                        ('incident', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='alerts.alertincident')),
                    ],
                    options={
                        'verbose_name_plural': 'alert deliveries',
                        'db_table': 'taskops_alertdelivery',
                        'ordering': ['incident_id', 'id'],
                        'indexes': [models.Index(fields=['state', 'created_at'], name='alertdel_state_created')],
                        'constraints': [models.UniqueConstraint(fields=('incident', 'channel', 'kind'), name='uniq_alert_delivery')],
                    },
                ),
                migrations.AddConstraint(
                    model_name='alertrule',
                    constraint=models.UniqueConstraint(fields=('organization', 'name'), name='uniq_alert_rule_name_per_org'),
                ),
                migrations.AddIndex(
                    model_name='alertincident',
                    index=models.Index(fields=['organization', '-opened_at'], name='alertinc_org_opened'),
                ),
                migrations.AddConstraint(
                    model_name='alertincident',
                    constraint=models.UniqueConstraint(condition=models.Q(('state', 'open')), fields=('rule',), name='uniq_open_alert_incident_per_rule'),
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(slack_workspace_add_if_missing, migrations.RunPython.noop),
        migrations.RunPython(content_types_move, content_types_move_back),
    ]
