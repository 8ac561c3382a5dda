"""textback agent: the daemon and the domain core of missed-call text-back."""
