"""The drop-in contract test's helpers (tests/test_dropin.py): fake /proc trees both
exporters read (tree), and running, scraping and comparing the two exporters (run)."""
