"""Retrieval of soft prompts for a target: search the library with its queries, then apply RoSPr,
INTER, VAR or INTER+VAR (selection) and save the selection with its prompt (`rospr retrieve`)."""
