"""One query engine for every dashboard question (Plausible's stats-engine shape).

``model.parse_query`` validates a question once into a ``Query``; ``planner.plan`` decides between
the pre-aggregates (``preaggregates.py``) and the fact tables (``facts.py``), which share the SQL
pieces in ``sql.py``; ``runner.run`` executes and shapes the answer (twice for a comparison,
merged by ``compare.py``). Filter values are checked where they are parsed: regular expressions
by ``regex.py``, wildcard patterns by ``patterns.py``. API resources only parse, authorise and
render.
"""

from warehouse.query.model import (
           DateRange,
           Filter,
           Query,
           QueryError,
           parse_date_range,
           parse_query,
)
from warehouse.query.planner import Plan, plan
from warehouse.query.runner import Answer, run, run_sync

__all__ = ["Answer", "DateRange", "Filter", "Plan", "Query", "QueryError", "parse_date_range",
           "parse_query", "plan", "run", "run_sync"]
