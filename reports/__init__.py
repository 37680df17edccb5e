"""Report writers: the run folder (reports.writer), its HTML summary (reports.html)."""
