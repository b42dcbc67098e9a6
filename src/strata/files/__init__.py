"""OpenAI Files: uploaded content (under the data dir or any fsspec URL) and its metadata, scoped by team."""
