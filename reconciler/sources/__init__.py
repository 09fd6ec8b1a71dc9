"""Where desired members come from: SQL queries and UID files, read as sorted chunks."""
