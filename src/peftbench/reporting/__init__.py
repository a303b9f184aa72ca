"""Reporting: terminal tables (rich), the self-contained HTML report and static PNG plots."""

from peftbench.reporting.render import render_report

__all__ = ["render_report"]
