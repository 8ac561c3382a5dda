"""Calls: AMI events and CDR rows in, finished calls out, and what each missed call gets."""
