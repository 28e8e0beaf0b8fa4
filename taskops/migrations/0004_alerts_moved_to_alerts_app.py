# The alert models moved to the alerts app, which took over their tables (db_table):
# they leave taskops' state only; no table is dropped or renamed.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("taskops", "0003_alerts"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="AlertDelivery"),
                migrations.DeleteModel(name="AlertIncident"),
                migrations.DeleteModel(name="AlertRule"),
            ],
            database_operations=[],
        ),
    ]
