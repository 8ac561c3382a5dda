"""The lab: a real Asterisk in a directory, SIPp phones, an emulated modem, and the demo."""
