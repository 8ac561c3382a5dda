"""People: staff accounts and the customers' contact book."""
