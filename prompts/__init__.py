"""Prompts: Jinja templates and the tasks that pair a template with a schema and a parser."""
