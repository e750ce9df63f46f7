"""What a person reads: the model report and the experiment report (HTML rendered from the Jinja2 templates
in reports/templates), the command line's text summaries, and the one number-formatting module they share.
Reads the results the other layers compute; imports only the domain core (retention)."""
