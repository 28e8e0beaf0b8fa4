"""API building blocks every app's lists use: page size and ordering that say what is wrong."""

from __future__ import annotations

from functools import cached_property
from typing import Any, cast

from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from rest_framework import filters, pagination
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

MAX_PAGE_SIZE = 500
# Lists count their rows exactly up to this many; past it `count` stops there and
# `count_exact` is false. An exact COUNT(*) reads every matching row (half a million
# tickets of one organization: as long as the rest of the request many times over),
# and no page needs it: whether a next page exists is read from the page itself.
COUNT_LIMIT = 10_000


class CappedPage(Page):
    """A page of a list whose count stopped at the limit: `has_next` comes from its rows."""

    def __init__(self, object_list: Any, number: int, paginator: Any, *, more: bool) -> None:
        super().__init__(object_list, number, paginator)
        self.more = more

    def has_next(self) -> bool:
        return self.more


class CappedCountPaginator(Paginator):
    """Django's paginator, counting at most COUNT_LIMIT + 1 rows (a bounded subquery)."""

    count_limit = COUNT_LIMIT

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if hasattr(rows, "order_by"):
            # SELECT COUNT(*) FROM (SELECT ... LIMIT n): no ORDER BY, any index will do.
            return int(rows.order_by()[: self.count_limit + 1].count())
        return len(rows)

    @property
    def count_exact(self) -> bool:
        return self.count <= self.count_limit

    def validate_number(self, number: Any) -> int:
        if self.count_exact:
            return int(super().validate_number(number))
        try:
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger(self.error_messages["invalid_page"]) from None
        if number < 1:
            raise EmptyPage(self.error_messages["min_page"])
        return int(number)

    def page(self, number: Any) -> Page:
        if self.count_exact:
            return super().page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        # One row more than the page tells whether another page follows.
        rows = list(self.object_list[bottom : bottom + self.per_page + 1])
        if not rows:
            raise EmptyPage(self.error_messages["no_results"])
        return CappedPage(rows[: self.per_page], number, self, more=len(rows) > self.per_page)


class Pagination(pagination.PageNumberPagination):
    """?page= and ?page_size= (1 to MAX_PAGE_SIZE; more is cut to the maximum).

    `count` is exact up to COUNT_LIMIT rows; beyond, it is COUNT_LIMIT, `count_exact` is
    false, and the pages go on (`next` is set while rows remain).
    """

    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE
    django_paginator_class = CappedCountPaginator

    def get_page_number(self, request: Request, paginator: Any) -> Any:
        page_number = request.query_params.get(self.page_query_param) or 1
        if page_number in self.last_page_strings and not paginator.count_exact:
            raise NotFound(
                f"Invalid page: the last page of more than {paginator.count_limit:,} rows "
                "is not counted."
            )
        return super().get_page_number(request, paginator)

    def get_paginated_response(self, data: Any) -> Response:
        # paginate_queryset set the page, made by django_paginator_class.
        paginator = cast("CappedCountPaginator", cast("Page", self.page).paginator)
        return Response(
            {
                "count": min(paginator.count, paginator.count_limit),
                "count_exact": paginator.count_exact,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        response = super().get_paginated_response_schema(schema)
        response["properties"]["count"]["description"] = (
            f"rows matching, counted up to {COUNT_LIMIT:,}"
        )
        response["properties"] = {
            "count": response["properties"]["count"],
            "count_exact": {
                "type": "boolean",
                "description": f"false when more than {COUNT_LIMIT:,} rows match",
            },
            **{k: v for k, v in response["properties"].items() if k != "count"},
        }
        response["required"] = ["count", "count_exact", "results"]
        return response

    def get_page_size(self, request: Request) -> int | None:
        raw = request.query_params.get(self.page_size_query_param)
        if raw in (None, ""):
            return self.page_size
        if not (raw.isascii() and raw.isdigit()) or int(raw[:12]) < 1:
            raise ValidationError(
                {self.page_size_query_param: [f"a whole number from 1 to {self.max_page_size}"]}
            )
        return min(int(raw[:12]), self.max_page_size)


class OrderingFilter(filters.OrderingFilter):
    """DRF's ?ordering=, refusing unknown fields (400) and ending on the id for stable pages."""

    def get_ordering(self, request: Request, queryset: Any, view: Any) -> Any:
        params = request.query_params.get(self.ordering_param)
        if params:
            fields = [param.strip() for param in params.split(",") if param.strip()]
            valid = {
                name for name, _label in self.get_valid_fields(queryset, view, {"request": request})
            }
            unknown = [field for field in fields if field.lstrip("-") not in valid]
            if unknown:
                raise ValidationError(
                    {
                        self.ordering_param: [
                            f"cannot order by {', '.join(unknown)}; "
                            f"one of {', '.join(sorted(valid))} (prefix - for descending)"
                        ]
                    }
                )
            if not any(field.lstrip("-") in ("id", "pk") for field in fields):
                fields.append("-id" if fields[0].startswith("-") else "id")
            return fields
        return self.get_default_ordering(view)


class SearchFilter(filters.SearchFilter):
    """DRF's ?search=, advertised in the schema only by views that have search_fields."""

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        if not getattr(view, "search_fields", None):
            return []
        return super().get_schema_operation_parameters(view)
