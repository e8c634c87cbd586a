"""The thin collector: parse -> validate -> stamp -> append to the spool -> answer 202."""
