"""The owner's reports: the dashboard's figures, counted in SQL, and the A/B statistics."""
