"""API building blocks every app's lists use: page size and ordering that say what is wrong."""

from __future__ import annotations

from typing import Any

from rest_framework import filters, pagination
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

MAX_PAGE_SIZE = 500


class Pagination(pagination.PageNumberPagination):
    """?page= and ?page_size= (1 to MAX_PAGE_SIZE; more is cut to the maximum)."""

    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

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
