"""Query API: sites, tokens, and every dashboard question from one query engine."""
