# The downstream targets (paper 4.3 and F.2; docs/downstream.md): the one-step student inside ControlNet,
# DreamBooth, ScaleCrafter and ReVersion. Each section of config `downstream` makes one target named after
# it (workflow/rules/<name>.smk), whose results lie under <results>/downstream/<name>/ and whose last file,
# summary.json (dkd.report.downstream), is its part of the report's Downstream section. `snakemake downstream`
# (Snakefile) makes every configured one; `all` makes them through the report.


def downstream_path(target, *parts):
    """A path under <results>/downstream/<target>/."""
    return results("downstream", target, *parts)


def downstream_log(target, *parts):
    """The log of a downstream rule, under <results>/logs/downstream/<target>/."""
    return log_path("downstream", target, *parts)


def downstream_label(target, path):
    """A downstream figure's label in the HTML report: its path under the target's folder."""
    return str(Path(path).relative_to(downstream_path(target)))


def downstream_summaries():
    """summary.json of every configured downstream target."""
    return [downstream_path(name, "summary.json") for name in config["downstream"]]
