"""Everything that speaks to Asterisk: the AMI link and the AMI transcript format."""
