"""The book's figure helpers: alternative text read from the figure, and figure numbering by name."""

import matplotlib.pyplot as plt
import pytest

from lib import plotting


def test_describe_reads_titles_labels_and_legends():
    fig, (left, right) = plotting.figure(1, 2)
    left.plot([0, 1], [1, 0], label="baseline")
    left.plot([0, 1], [0, 1], label="blurred")
    left.set(title="without augmentation", xlabel="accuracy (%)", ylabel="consistency (%)")
    left.legend()
    right.imshow([[0, 1], [1, 0]])
    right.set_title("$\\Delta h$ map")
    fig.suptitle("Consistency against accuracy")
    alt = plotting.describe(fig)
    plt.close(fig)
    assert alt.startswith("Consistency against accuracy.")
    assert 'Panel 1 "without augmentation"; x: accuracy (%); y: consistency (%); series: baseline, blurred.' in alt
    assert 'Panel 2 "Delta h map"' in alt  # TeX markup dropped: alt text is read aloud
    assert ".png" not in alt


def test_describe_without_title_counts_panels_and_stays_short():
    fig, axes = plotting.figure(2, 5)
    for ax in axes.flat:
        ax.plot(range(3), label="x" * 80)
        ax.set(xlabel="a long axis label " * 3, ylabel="y")
        ax.legend()
    alt = plotting.describe(fig)
    plt.close(fig)
    assert alt.startswith("Figure with 10 panels.") and len(alt) <= 600 and alt.endswith("…")


def test_numbered_outside_a_kernel_consumes_names_in_order_and_cannot_nest():
    results = [{"provenance": {"profile": "quick", "seed": 0, "device": "cpu", "torch": "x", "commit": "abc",
                               "wall_time_s": 1.0, "finished": "now", "code": "f"}}]
    with plotting.numbered("fig-a", "fig-b"):
        for _ in range(2):
            fig, ax = plotting.figure()
            ax.plot([0, 1])
            plotting.provenance_footer(fig, results)
            plt.close(fig)
        assert plotting._PENDING_NAMES == []
        with pytest.raises(RuntimeError, match="cannot be nested"):
            with plotting.numbered("fig-c"):
                pass
    with plotting.numbered("fig-d"):
        pass  # outside a kernel nothing is glued, and nothing is left pending
    assert plotting._PENDING_NAMES == []
