"""Messages: the outbox, customers' texts in, conversations, timers and the shared inbox."""
