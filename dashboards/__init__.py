"""procsnap's Grafana dashboards and Prometheus rules, generated from one set of definitions
(defs.py) by build.py; the generated files sit beside this package and in rules/."""
