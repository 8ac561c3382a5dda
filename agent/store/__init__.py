"""The database: engine and migrations, the tables, and the audit log."""
