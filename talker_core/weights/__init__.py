"""Model files: loading the published files (``loaders``), fetching them (``download``) and the
tiny random-weight debug set in the same formats (``debug_models``)."""
