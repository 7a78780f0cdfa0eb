"""Executed lessons on efficient-network design, built on the project's API (see lessons/README.md)."""

import io


def show(fig) -> None:
    """Shows a figure (the project's Agg figures) as a PNG in a notebook; a plain script run only names it.

    A script run never opens a window or blocks: the lesson goes on, and `python -m lessons`
    writes the pages with the figures.
    """
    try:
        from IPython import display, get_ipython  # pylint: disable=import-outside-toplevel
    except ImportError:
        get_ipython = lambda: None  # noqa: E731
    title = fig.axes[0].get_title() if fig.axes else ""
    if get_ipython() is None:
        print(f"[figure: {title}]")
        return
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    display.display(display.Image(data=png.getvalue(), format="png"))
