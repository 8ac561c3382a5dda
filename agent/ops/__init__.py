"""Tools for IT staff at the shell: doctor and send-test."""
