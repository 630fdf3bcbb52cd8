"""A self-contained HTML evaluation report for each pipeline run (the component;
the page's reading, figures and template are the ``report`` package)."""
