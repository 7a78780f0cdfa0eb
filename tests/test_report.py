"""draw_all and write_report end to end on made-up rows: every file, valid PNGs, the findings' numbers."""

import base64
import colorsys
import dataclasses
import os
import re
import warnings

import pytest
from matplotlib import colors as mcolors

import models
from core import files
from measure import figures, findings, report, results
from measure.analysis import fitting, plotting

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ENVIRONMENT = {"device": "Test GPU", "platform": "gpu", "jax": "0.0.test", "jaxlib": "0.0.testlib",
               "xla_flags": "--xla_test_flag=1", "host": "testhost", "python": "3.11",
               "peak_flops_per_s": {"float32": 2.5e11}}
SETTING = results.Setting("float32", 32)
# Two tiny made-up networks: name, family, params, G-Ops, paper top-1, ms per image at batch 1.
TINY = [("tiny_a", "resnet", 2_000_000, 0.5, 61.0, 1.0), ("tiny_b", "enet", 500_000, 0.2, 55.0, 0.6)]


def make_rows(power=None, networks=TINY, batches=(1, 4, 16)):
    """Rows of the made-up networks (power: None, "nvml" or "modelled") plus one out-of-memory row."""
    rows = []
    for i, (name, family, params, gops, top1, ms) in enumerate(networks):
        counts = dict(model=name, display_name=name.replace("_", "-").title(), family=family, resolution=32,
                      native_resolution=224, precision="float32", device="Test GPU", params=params, paper_ops_per_image=int(gops * 1e9),
                      flops_per_image=int(gops * 1e9), top1_percent_paper=top1, gops_paper=gops,
                      params_m_paper=params / 1e6)
        for batch in batches:
            t = ms / 1e3 / batch ** 0.5
            watts = {None: None, "nvml": 40.0 + 5 * i + batch / 4, "modelled": 50.0}[power]
            rows.append(results.Row(
                **counts, batch_size=batch, memory_analytical_bytes=4 * params + batch * 1_000_000,
                time_per_image_s=t, time_per_image_p25_s=t * 0.98, time_per_image_p75_s=t * 1.02,
                images_per_s=1 / t, throughput_time_per_image_s=t, compile_s=0.5, latency_calls=10,
                dispatch_s=1e-5,
                memory_xla_total_bytes=4 * params + batch * 900_000,
                power_source=power or "not measured", power_w=watts, energy_per_image_j=watts * t if watts else None))
    name, family, params, gops, top1, _ = networks[0]
    rows.append(results.Row(name, name.replace("_", "-").title(), family, 64, 32, "float32", "Test GPU",
                            native_resolution=224, status=results.OUT_OF_MEMORY, error="RESOURCE_EXHAUSTED", params=params,
                            paper_ops_per_image=int(gops * 1e9), top1_percent_paper=top1, gops_paper=gops,
                            params_m_paper=params / 1e6))
    return rows


def contents(rows, environment=ENVIRONMENT, settings=(SETTING,)):
    """The results of one directory: the rows under the given settings."""
    return results.Results(dict(environment), list(settings), list(rows))


def drawn_stems(rows) -> list[str]:
    """The figures draw_all writes for these rows: every one, but power only where a measured point has it."""
    powered = any(r.status == results.OK and r.power_w is not None for r in rows)
    return [stem for stem in figures.FIGURES if powered or stem != figures.POWER_FIGURE]


def run(rows, out_dir):
    """draw_all then write_report; returns report.md and report.html as text."""
    (out_dir / SETTING.slug).mkdir(exist_ok=True)
    written = figures.draw_all(rows, str(out_dir / SETTING.slug))
    assert sorted(written) == sorted(f"{stem}.{ext}" for stem in drawn_stems(rows) for ext in ("png", "svg"))
    for name in written:
        with open(out_dir / SETTING.slug / name, "rb") as f:
            data = f.read()
        assert data.startswith(PNG_SIGNATURE if name.endswith(".png") else b"<?xml") and len(data) > 1000, name
    written = [os.path.join(SETTING.slug, name) for name in written]
    assert report.write_report(contents(rows), str(out_dir), written) == ["report.md", "report.html"]
    assert not [f for f in os.listdir(out_dir) if f.startswith(".tmp-")], "a temporary file was left behind"
    return (out_dir / "report.md").read_text(encoding="utf-8"), (out_dir / "report.html").read_text(encoding="utf-8")


def check_html_is_self_contained(page, count=len(figures.FIGURES)):
    """`count` embedded PNGs, each decodable, and nothing fetched or linked from outside."""
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == count
    assert all(base64.b64decode(image).startswith(PNG_SIGNATURE) for image in images)
    assert len(re.findall(r"\bsrc=", page)) == len(images)
    for external in ("http://", "https://", "<link", "<script", "href=", "url("):
        assert external not in page


def check_findings_and_fits(md, rows):
    """The four findings are named, with the linear fits' numbers as fitted at batch 1 and 16."""
    for n in (1, 2, 3, 4):
        assert f"Finding {n}:" in md
    for batch in (1, 16):
        points = findings.ok_rows(rows, batch)
        fit = fitting.linear_fit([findings.gops_per_image(r) for r in points], [r.time_per_image_s * 1e3 for r in points])
        equation = f"time = {fit.slope:.4g} ms/G-Op × G-Ops + {fit.intercept:.4g} ms, R² = {fit.r2:.3f}"
        assert f"batch {batch}: {equation}" in md
    assert "Only two networks" in md and "Too few networks to judge" in md
    assert "batch 1: not fitted (needs at least 3 points" in md  # the hyperbola, with two networks
    assert "Tiny-A at batch 64: out_of_memory" in md
    assert "Test GPU" in md and "0.0.testlib" in md and "--xla_test_flag=1" in md and "testhost" in md


def test_end_to_end_with_measured_power(tmp_path):
    rows = make_rows(power="nvml")
    md, page = run(rows, tmp_path)
    check_findings_and_fits(md, rows)
    check_html_is_self_contained(page)
    spread = findings.power_spread(rows)
    assert f"spread (max − min) / mean = {spread.range_fraction:.1%}" in md
    assert "| Tiny-A | resnet | 2.00 | 0.50 | 61.00 | 30.50 |" in md  # the batch-1 tables
    assert "| Tiny-A | 1.000 | 0.980–1.020 | 1.000 | 1000.0 | 0.010 |" in md and "| Tiny-A | 8.9 | 9.0 | 40.2 | 40.2 |" in md
    bound = findings.energy_bound(rows, findings.energy_budgets(rows)[0])
    assert f"| {bound.budget_j * 1e3:.3g} | 1 of 2 |" in md and f"- {bound.budget_j * 1e3:.3g} mJ/image: " \
                                                                 f"{bound.networks[0]}\n" in md
    for stem in figures.FIGURES:
        assert f"({SETTING.slug}/{stem}.png)" in md
    assert report.POWER_HINT not in md


def test_end_to_end_without_power(tmp_path):
    rows = make_rows(power=None)
    (tmp_path / SETTING.slug).mkdir()
    stale = tmp_path / SETTING.slug / f"{figures.POWER_FIGURE}.png"
    stale.write_bytes(PNG_SIGNATURE)  # an earlier run's power figure
    md, page = run(rows, tmp_path)
    check_findings_and_fits(md, rows)
    check_html_is_self_contained(page, len(figures.FIGURES) - 1)
    assert md.count("Here: not measured (") == 2  # findings 1 and 3
    # No empty power figure: in its place the report says how to model power.
    assert not stale.exists() and figures.POWER_FIGURE not in md
    figure_section = md.split("### Figures")[1]
    assert "--power_watts=W to model energy at a constant W watts" in report.POWER_HINT
    assert figure_section.index("fig_c_time_vs_batch") < figure_section.index(report.POWER_HINT) < \
        figure_section.index("fig_e_memory_vs_batch")
    power_texts = [t.get_text() for t in figures.power_vs_batch(rows).axes[0].texts]
    assert any("power not measured on this device" in t for t in power_texts)
    speed_texts = [t.get_text() for t in figures.top1_vs_speed(rows).axes[0].texts]
    assert any("no iso-energy lines" in t for t in speed_texts)


def test_modelled_power_is_labelled_and_not_taken_for_a_measurement(tmp_path):
    rows = make_rows(power="modelled")
    fig = figures.power_vs_batch(rows)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels and all("(modelled)" in label for label in labels)
    assert "modelled" in fig.axes[0].get_title()
    report.write_report(contents(rows), str(tmp_path), [])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Not a measurement: power is modelled" in md and "| peak (matmul probe) | float32: 250.0 GFLOP/s |" in md


def test_every_figure_says_no_data_when_nothing_was_measured(tmp_path):
    failed = [r for r in make_rows() if r.status != results.OK]
    for stem, (draw, _) in figures.FIGURES.items():
        texts = [t.get_text() for ax in draw([]).axes for t in ax.texts]
        assert any(t.startswith("no data") for t in texts), stem
    md, page = run(failed, tmp_path)
    assert "not fitted: no network was timed successfully" in md
    assert "data:image/png;base64," in page


def test_a_single_point_draws_without_collapsing_axes():
    # One network at one batch size sits on its own iso-energy line: the log axis must not collapse.
    rows = make_rows(power="modelled", networks=TINY[:1], batches=(1,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for draw, _ in figures.FIGURES.values():
            draw(rows).canvas.draw()


def test_modelled_power_is_drawn_and_needs_no_hint(tmp_path):
    rows = make_rows(power="modelled")
    assert f"{figures.POWER_FIGURE}.png" in figures.draw_all(rows, str(tmp_path / SETTING.slug))
    report.write_report(contents(rows), str(tmp_path), [])
    assert report.POWER_HINT not in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_hyperbola_and_disagreements_are_reported(tmp_path):
    # Four networks whose time does not follow operations and whose power varies by far more than 20 %.
    four = TINY + [("tiny_c", "vgg", 9_000_000, 3.0, 70.0, 1.2), ("tiny_d", "inception", 4_000_000, 1.0, 68.0, 9.0)]
    rows = make_rows(power="nvml", networks=four, batches=(1,))
    rows[3].power_w = 200.0
    report.write_report(contents(rows), str(tmp_path), [])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    ok = findings.ok_rows(rows, 1)
    fit = fitting.hyperbola_fit([r.time_per_image_s * 1e3 for r in ok], [r.top1_percent_paper for r in ok])
    assert f"a_max = {fit.a_max:.4g} %, k = {fit.k:.4g} %·ms, t0 = {fit.t0:.4g} ms, R² = {fit.r2:.3f}" in md
    assert "This device disagrees with the paper: power varies by" in md
    assert "This device disagrees with the paper: operations predict time poorly" in md


def fourteen(power=None, batches=(1, 16)):
    """Rows of the registry's 14 networks under their own names and families (made-up numbers)."""
    networks = [(name, models.spec(name).family, (i + 1) * 5_000_000, 0.5 + i, 55.0 + i, 1.0 + i)
                for i, name in enumerate(models.names())]
    rows = make_rows(power=power, networks=networks, batches=batches)
    for r in rows:
        r.display_name = models.spec(r.model).display_name
    return rows


def test_each_family_has_a_colormap_a_marker_and_each_network_its_own_shade():
    palette = figures.styles(fourteen())
    assert len(palette) == 14 and len({style.colour for style in palette.values()}) == 14
    families = {}
    for name in models.names():
        families.setdefault(models.spec(name).family, []).append(name)
    assert len(families) == 7 and len({plotting.FAMILY_MARKERS[f] for f in families}) == 7
    for family, members in families.items():
        colormap = plotting.family_colormap(family)
        for i, name in enumerate(members):
            expected = mcolors.to_hex(colormap(plotting.member_position(i, len(members))))
            assert palette[name] == (expected, plotting.FAMILY_MARKERS[family]), name
        # Members spread over their family's colormap: lightness (L*) apart by at least 10 between neighbours.
        lightness = [plotting.lightness(palette[name].colour) for name in members]
        assert all(a - b >= 10 for a, b in zip(lightness, lightness[1:])), (family, lightness)
    assert [plotting.lightness(palette[n].colour) for n in families["resnet"]] == pytest.approx(
        [78, 65.5, 53, 40.5, 28], abs=1)  # the five ResNets evenly spaced end to end
    # One hue per family: every shade keeps its family's hue, and families' hues differ.
    hue = lambda colour: colorsys.rgb_to_hls(*mcolors.to_rgb(colour))[0]
    for family, members in families.items():
        assert all(abs(hue(palette[n].colour) - hue(plotting.FAMILY_COLOURS[family])) < 0.02 for n in members), family
    hues = sorted(hue(plotting.FAMILY_COLOURS[f]) for f in families)
    assert min(b - a for a, b in zip(hues, hues[1:])) > 0.02


def test_styles_are_fixed_whoever_else_is_drawn():
    rows = make_rows(networks=[("resnet18", "resnet", 1, 1.0, 70.0, 1.0), ("resnet50", "resnet", 1, 1.0, 76.0, 2.0),
                               ("mystery", "unknown", 1, 1.0, 50.0, 1.0)])
    palette = figures.styles(rows)
    assert palette["resnet18"] != palette["resnet50"]
    assert palette == figures.styles(rows[::-1])  # independent of order and of which others are present
    assert palette["resnet50"] == figures.styles([r for r in rows if r.model == "resnet50"])["resnet50"]
    assert palette["resnet50"] == figures.styles(fourteen())["resnet50"]
    assert palette["mystery"] == (plotting.OTHER_COLOUR, plotting.OTHER_MARKER)


def test_every_figure_draws_each_network_in_its_style():
    rows = fourteen(power="nvml")
    palette = figures.styles(rows)
    names = {models.spec(n).display_name: n for n in models.names()}
    for stem in ("fig_c_time_vs_batch", "fig_d_power_vs_batch", "fig_h_top1_vs_images_per_s"):
        handles, labels = figures.FIGURES[stem][0](rows).axes[0].get_legend_handles_labels()
        drawn = {names[label]: handle for handle, label in zip(handles, labels) if label in names}
        assert len(drawn) == 14, stem
        for name, handle in drawn.items():
            colour = handle.get_color() if hasattr(handle, "get_marker") else handle.get_facecolor()[0]
            marker = handle.get_marker() if hasattr(handle, "get_marker") else None
            assert mcolors.to_hex(colour) == palette[name].colour, (stem, name)
            assert marker in (None, palette[name].marker), (stem, name)


def test_the_result_tables_fit_a_laptop_screen_with_all_14_networks(tmp_path):
    rows = fourteen(power="modelled")
    for r in rows:
        r.error = "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123456789 bytes" if r.error else ""
    failed = dataclasses.replace(rows[0], batch_size=1, status=results.OUT_OF_MEMORY, error=rows[-1].error,
                                 time_per_image_s=None, images_per_s=None, power_w=None, energy_per_image_j=None)
    rows[0] = failed  # a failure at the tables' batch size too, error and all
    report.write_report(contents(rows), str(tmp_path), [])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    tables = [line for line in md.splitlines() if line.startswith("|")]
    assert len(tables) > 3 * 16 and max(map(len, tables)) <= 100, max(tables, key=len)
    # Nothing dropped: every network in every results table, the failure's error below them.
    for name in models.names():
        assert md.count(f"| {models.spec(name).display_name} |") == 3, name
    assert "| Inception-v4 | 280.9 | 281.0 | 50.0 (modelled) | 700 |" in md
    assert f"Not measured at batch 1: AlexNet: out_of_memory ({failed.error})." in md
    for bound in (findings.energy_bound(rows, budget) for budget in findings.energy_budgets(rows)):
        assert f"| {bound.budget_j * 1e3:.3g} | {len(bound.networks)} of 14 |" in md
        assert f"- {bound.budget_j * 1e3:.3g} mJ/image: {', '.join(bound.networks)}\n" in md


@pytest.mark.parametrize("bad", [KeyboardInterrupt, MemoryError])
def test_an_interrupted_write_leaves_the_old_report(tmp_path, monkeypatch, bad):
    rows = make_rows(power="nvml")
    report.write_report(contents(rows), str(tmp_path), [])
    before = (tmp_path / "report.md").read_text(encoding="utf-8")

    def interrupted(*args):
        raise bad()

    monkeypatch.setattr(files.os, "replace", interrupted)
    with pytest.raises(bad):
        report.write_report(contents(make_rows()), str(tmp_path), [])
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == before
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


# Six made-up networks: name, family, params, G-Ops, paper top-1, ms per image at batch 1.
SIX = [("n1", "resnet", 1_000_000, 0.5, 55.0, 1.0), ("n2", "resnet", 2_000_000, 1.0, 62.0, 2.0),
       ("n3", "vgg", 3_000_000, 2.0, 67.0, 4.0), ("n4", "vgg", 4_000_000, 4.0, 70.5, 8.0),
       ("n5", "enet", 5_000_000, 8.0, 72.5, 16.0), ("n6", "enet", 6_000_000, 16.0, 73.5, 32.0)]


def verdicts(rows, tmp_path) -> list[str]:
    """The report's verdict lines, in the order of the findings."""
    report.write_report(contents(rows), str(tmp_path), [])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    return [line.strip("*") for line in md.splitlines() if line.startswith("**")]


def test_every_finding_agrees_on_data_made_to_agree(tmp_path):
    rows = make_rows(power="nvml", networks=SIX, batches=(1, 16))
    for r in rows:  # power within 20 %, energy rising with operations
        r.power_w = 40.0
        r.energy_per_image_j = 40.0 * r.time_per_image_s if r.time_per_image_s else None
    found = verdicts(rows, tmp_path)
    assert len(found) == 4 and all(v.startswith("This device agrees with the paper") for v in found), found


def test_every_finding_disagrees_on_data_made_to_disagree(tmp_path):
    rows = make_rows(power="nvml", networks=SIX, batches=(1, 16))
    for r in rows:
        if r.time_per_image_s is None:
            continue
        rank = int(r.model[1])
        # Time unrelated to operations and accuracy; power varying 4x; energy falling as operations rise.
        r.time_per_image_s = [3.0, 0.5, 6.0, 1.0, 4.0, 2.0][rank - 1] / 1e3 / r.batch_size ** 0.5
        r.power_w = 20.0 * (1 + (rank % 4))
        r.energy_per_image_j = (7 - rank) * 1e-3
    found = verdicts(rows, tmp_path)
    assert len(found) == 4 and all(v.startswith("This device disagrees with the paper") for v in found), found
    assert "power varies by" in found[0] and "hyperbola fits poorly" in found[1]
    assert "does not follow operations" in found[2] and "operations predict time poorly" in found[3]


def test_finding_3_disagrees_when_the_most_frugal_network_is_the_most_accurate(tmp_path):
    rows = make_rows(power="nvml", networks=SIX, batches=(1,))
    for r in rows:
        r.power_w = 40.0
        r.energy_per_image_j = 40.0 * r.time_per_image_s if r.time_per_image_s else None
        r.top1_percent_paper = 80.0 if r.model == "n1" else r.top1_percent_paper
    found = verdicts(rows, tmp_path)
    assert found[2] == "This device disagrees with the paper: the most frugal network, N1, is also the most " \
                       "accurate, so no budget bounds accuracy."


def test_each_finding_states_its_criterion(tmp_path):
    report.write_report(contents(make_rows(power="nvml")), str(tmp_path), [])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert md.count("Criterion: ") == 4


def test_settings_are_reported_apart_and_never_fitted_together(tmp_path):
    fast = make_rows(networks=SIX, batches=(1,))
    half = [dataclasses.replace(r, precision="float16", time_per_image_s=r.time_per_image_s and r.time_per_image_s / 3)
            for r in fast]
    both = contents(fast + half, settings=(SETTING, results.Setting("float16", 32)))
    report.write_report(both, str(tmp_path), [])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    sections = md.split("\n## ")[2:]
    assert [s.splitlines()[0] for s in sections] == ["float32, 32x32", "float16, 32x32", "Precisions compared"]
    for section, rows in zip(sections, (fast, half)):
        ok = findings.ok_rows(rows, 1)
        fit = fitting.linear_fit([findings.gops_per_image(r) for r in ok], [r.time_per_image_s * 1e3 for r in ok])
        assert f"batch 1: time = {fit.slope:.4g} ms/G-Op × G-Ops + {fit.intercept:.4g} ms, R² = {fit.r2:.3f} " \
               f"(6 networks)" in section


def test_a_reduced_precision_is_compared_with_float32_at_the_same_points(tmp_path):
    fast = make_rows(networks=SIX, batches=(1,))
    slower = [dataclasses.replace(r, precision="bfloat16",
                                  time_per_image_s=r.time_per_image_s and r.time_per_image_s * 1.25) for r in fast]
    slower[2].time_per_image_s /= 2.5  # N3 runs twice as fast in bfloat16
    peaks = {"float32": 2.5e11, "bfloat16": 1.0e11}
    both = contents(fast + slower, environment={**ENVIRONMENT, "platform": "cpu", "peak_flops_per_s": peaks},
                    settings=(SETTING, results.Setting("bfloat16", 32)))
    report.write_report(both, str(tmp_path), [])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert ("bfloat16, 32x32 against float32, 32x32: over 6 points measured in both, bfloat16 takes 1.25x the "
            "latency of float32 (median; from 0.80x (N1 at batch 1) to 2.00x (N3 at batch 1) as fast). On Test GPU, "
            "bfloat16 is not faster than float32 in the median. The matmul probe reached 100.0 GFLOP/s in bfloat16 "
            "against 250.0 GFLOP/s in float32 (0.40x).") in md
    for elsewhere in ("AVX512", "jaxlib 0.10", "XLA:CPU", "oneDNN"):  # no other machine's story
        assert elsewhere not in md


def test_a_faster_reduced_precision_says_so_in_its_own_numbers(tmp_path):
    fast = make_rows(networks=SIX, batches=(1, 16))
    half = [dataclasses.replace(r, precision="float16", time_per_image_s=r.time_per_image_s and r.time_per_image_s / 3)
            for r in fast]
    both = contents(fast + half, settings=(SETTING, results.Setting("float16", 32)))
    report.write_report(both, str(tmp_path), [])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "over 12 points measured in both, float16 takes 0.33x the latency of float32 (median; from 3.00x" in md
    assert "On Test GPU, float16 is faster than float32 in the median." in md
    assert "matmul probe" not in md.split("## Precisions compared")[1]  # no float16 probe in the environment


def test_no_comparison_without_float32_at_the_same_setting(tmp_path):
    half = [dataclasses.replace(r, precision="float16") for r in make_rows(networks=SIX, batches=(1,))]
    report.write_report(contents(half, settings=(results.Setting("float16", 32),)), str(tmp_path), [])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Precisions compared" not in md and "faster" not in md and "latency of float32" not in md


def test_the_report_says_how_the_points_were_timed(tmp_path):
    rows = make_rows(power="nvml")
    rows[0].latency_calls = 3
    timed = {**ENVIRONMENT, "timing": {"min_time_s": 0.1, "min_repeats": 3, "warmup": 1, "max_warmup": 20,
                                       "settle": 0.1}}
    report.write_report(contents(rows, environment=timed), str(tmp_path), [])
    md = (tmp_path / "report.md").read_text()
    batches = ", ".join(str(b) for b in sorted({r.batch_size for r in rows if r.status == results.OK}))
    assert (f"How it was timed: batch sizes {batches}; each point at least 1 call of warm-up, more until two agree "
            "within 10% (at most 20 or 0.1 s); latency: the median and quartiles of at least 3 calls and 0.1 s") in md
    assert "medians of 3 to 10 timed calls per point" in md
    report.write_report(contents(rows), str(tmp_path), [])  # results without their timing options: no claim
    assert "How it was timed" not in (tmp_path / "report.md").read_text()
