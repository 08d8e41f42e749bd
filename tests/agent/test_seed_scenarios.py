"""The seed document's scenarios, end to end: a scripted model against the real sandbox.

The scripted replies are what a good model would write (prose, one python block, then a plain
answer); only the model is fake. Each test checks what a user would notice: the files and
images produced, what the model was shown between rounds, and how the turn finished.
"""

from __future__ import annotations

import re
from pathlib import Path
from textwrap import dedent

import matplotlib.image
import numpy as np

from codeinterp.agent import Event, ExecutionDone, Finished, Interpreter
from codeinterp.executors import Session
from codeinterp.models.scripted import ScriptedModel
from codeinterp.outputs import Execution

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- helpers --------------------------------------------------------------------------------
def reply(prose: str, code: str) -> str:
    """A model reply: a sentence of prose, then one python block."""
    return f"{prose}\n\n```python\n{dedent(code).strip()}\n```"


def run(interpreter: Interpreter, text: str) -> list[Event]:
    return list(interpreter.chat(text))


def finished(events: list[Event]) -> Finished:
    last = events[-1]
    assert isinstance(last, Finished)
    return last


def executions(events: list[Event], round_: int | None = None) -> list[Execution]:
    return [
        e.execution
        for e in events
        if isinstance(e, ExecutionDone) and (round_ is None or e.round == round_)
    ]


def shown_after(model: ScriptedModel, call: int) -> str:
    """What the model read at the end of its prompt number `call` (1-based): the results of
    the previous round's code."""
    message = model.prompts[call - 1][-1]
    assert message.role == "user" and message.content.startswith("Execution result:")
    return message.content


# -- 1. data analysis -----------------------------------------------------------------------
def test_data_analysis_returns_three_plots_and_keeps_df_across_rounds(session: Session) -> None:
    build = reply(
        "Let me build the data set and look at its structure.",
        """
        import numpy as np
        import pandas as pd
        rng = np.random.default_rng(0)
        df = pd.DataFrame({
            "age": rng.integers(18, 80, 200),
            "income": rng.normal(50_000, 15_000, 200).round(2),
            "score": rng.uniform(0, 1, 200),
        })
        df.info()
        """,
    )
    plot = reply(
        "Three numeric columns, no missing values. Now the distributions and relations:",
        """
        import matplotlib.pyplot as plt
        import seaborn as sns
        df["income"].plot.hist(bins=20, title="income")
        plt.show()
        df.boxplot(column=["age", "score"])
        plt.show()
        sns.pairplot(df)
        plt.show()
        """,
    )
    answer = "Income looks normal around 50k; age and score are uniform and uncorrelated."
    model = ScriptedModel([build, plot, answer])
    events = run(Interpreter(model, session), "Analyse a sample of 200 customers.")

    info = shown_after(model, 2)
    assert "RangeIndex: 200 entries" in info and "Data columns (total 3 columns)" in info
    (plotting,) = executions(events, round_=2)
    assert plotting.ok, plotting.error  # df came from round 1: no NameError
    assert "df =" not in plot
    images = plotting.images()
    assert len(images) == 3 and all(png.startswith(PNG_MAGIC) for png in images)
    placeholders = re.findall(r"\[image/png \d+x\d+: figure-\d\.png\]", shown_after(model, 3))
    assert len(placeholders) == 3
    assert finished(events) == Finished("answered", answer, 3)


# -- 2. image pipeline ----------------------------------------------------------------------
HEIGHT, WIDTH, CY, CX, RADIUS = 120, 160, 60, 85, 32


def known_person() -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.asarray((yy - CY) ** 2 + (xx - CX) ** 2 <= RADIUS**2)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_image_pipeline_cuts_out_restyles_and_draws_line_art(session: Session) -> None:
    replies = [
        reply(
            "I'll make a synthetic photo: a bright disc (the person) on a noisy background.",
            f"""
            import numpy as np
            import matplotlib.pyplot as plt
            rng = np.random.default_rng(7)
            yy, xx = np.mgrid[0:{HEIGHT}, 0:{WIDTH}]
            person = (yy - {CY}) ** 2 + (xx - {CX}) ** 2 <= {RADIUS} ** 2
            photo = rng.uniform(0.0, 0.35, ({HEIGHT}, {WIDTH}, 3))
            photo[person] = [0.95, 0.8, 0.6] + rng.normal(0, 0.03, (person.sum(), 3))
            plt.imsave("photo.png", photo.clip(0, 1))
            print(photo.shape)
            """,
        ),
        reply(
            "Now I cut the person out: the person is much brighter than the background.",
            """
            img = plt.imread("photo.png")[..., :3]
            brightness = img.mean(axis=2)
            mask = brightness > 0.5
            plt.imsave("mask.png", mask, cmap="gray")
            plt.imsave("cutout.png", np.dstack([img, mask.astype(float)]))
            print(f"mask covers {mask.mean():.1%} of the image")
            """,
        ),
        reply(
            "Next a restyled version: posterised to 4 levels through a colour map.",
            """
            levels = 4
            poster = np.floor(brightness * levels).clip(0, levels - 1) / (levels - 1)
            plt.imsave("restyled.png", plt.cm.magma(poster))
            print(np.unique(poster))
            """,
        ),
        reply(
            "Finally line art from the gradient of the mask, then the list of files.",
            """
            import os
            gy, gx = np.gradient(mask.astype(float))
            lines = np.hypot(gx, gy) > 0
            plt.imsave("lineart.png", ~lines, cmap="gray")
            print(sorted(os.listdir(".")))
            """,
        ),
        "Done: mask.png, cutout.png (transparent background), restyled.png and lineart.png.",
    ]
    model = ScriptedModel(replies)
    events = run(Interpreter(model, session), "Cut out the person, restyle it, make line art.")

    assert all(e.ok for e in executions(events)), [e.error for e in executions(events)]
    names = ["cutout.png", "lineart.png", "mask.png", "photo.png", "restyled.png"]
    assert str(names) in shown_after(model, 5)
    for name in names:
        assert (Path(session.workspace) / name).read_bytes().startswith(PNG_MAGIC), name
    person = known_person()
    mask = matplotlib.image.imread(Path(session.workspace) / "mask.png")[..., 0] > 0.5
    assert iou(mask, person) > 0.9
    alpha = matplotlib.image.imread(Path(session.workspace) / "cutout.png")[..., 3]
    assert ((alpha > 0.5) == mask).all()
    lineart = matplotlib.image.imread(Path(session.workspace) / "lineart.png")[..., 0] < 0.5
    distance = np.hypot(*(np.argwhere(lineart) - [CY, CX]).T)
    assert lineart.any() and (abs(distance - RADIUS) < 3).all()  # the outline, nothing else
    assert finished(events) == Finished("answered", replies[-1], 5)


# -- 3. regex cleanup, then summary --------------------------------------------------------
RAW_OUTPUT = (
    "Great!!!! Really,,, amazing???  The product works.... mostly!!\n"
    "Battery lasts two days,,  charging is slow???   Would buy again!!!!"
)
REPEATED_PUNCTUATION = r"([!?,.])\1+"
REPEATED_SPACES = r"[ \t]{2,}"


def test_regex_cleanup_shows_the_cleaned_text_then_summarises(session: Session) -> None:
    (Path(session.workspace) / "model_output.txt").write_text(RAW_OUTPUT, encoding="utf-8")
    clean = reply(
        "I'll collapse repeated punctuation and spaces with a regular expression.",
        f"""
        import re
        text = open("model_output.txt", encoding="utf-8").read()
        cleaned = re.sub({REPEATED_PUNCTUATION!r}, r"\\1", text)
        cleaned = re.sub({REPEATED_SPACES!r}, " ", cleaned)
        print(cleaned)
        """,
    )
    summary = "Summary: the reviewer likes the product and its two-day battery; charging is slow."
    model = ScriptedModel([clean, summary])
    events = run(Interpreter(model, session), "Clean model_output.txt, then summarise it.")

    expected = re.sub(REPEATED_SPACES, " ", re.sub(REPEATED_PUNCTUATION, r"\1", RAW_OUTPUT))
    assert expected == (
        "Great! Really, amazing? The product works. mostly!\n"
        "Battery lasts two days, charging is slow? Would buy again!"
    )
    assert f"```text\n{expected}\n```" in shown_after(model, 2)
    assert finished(events) == Finished("answered", summary, 2)


# -- 4. a similarity loop that stops at its threshold ---------------------------------------
TARGET, START, STEP = [1.0, 2.0, 3.0, 4.0], [4.0, -1.0, 0.5, -2.0], 0.5
SIMILARITY = re.compile(r"similarity = (-?\d\.\d{4})")


def similarity_replies(threshold: float, nudges: int) -> list[str]:
    """Generate a candidate and measure it, then nudge it toward the target `nudges` times."""
    first = reply(
        "I'll generate a first candidate and measure its cosine similarity to the target.",
        f"""
        import numpy as np
        target, v = np.array({TARGET}), np.array({START})
        threshold = {threshold}
        def cosine(a, b):
            return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        print(f"similarity = {{cosine(v, target):.4f}}")
        """,
    )
    nudge = reply(
        "Still below the threshold: I'll generate a candidate closer to the target.",
        f"""
        v = v + {STEP} * (target - v)
        print(f"similarity = {{cosine(v, target):.4f}}")
        """,
    )
    return [first] + [nudge] * nudges


def expected_similarities(count: int) -> list[str]:
    target, v, out = np.array(TARGET), np.array(START), []
    for _ in range(count):
        out.append(f"{v @ target / (np.linalg.norm(v) * np.linalg.norm(target)):.4f}")
        v = v + STEP * (target - v)
    return out


def printed_similarities(model: ScriptedModel) -> list[str]:
    """The similarity each round printed, as the model read it at the start of the next."""
    return [
        match.group(1)
        for prompt in model.prompts[1:]
        for match in [SIMILARITY.search(prompt[-1].content)]
        if match is not None
    ]


def test_similarity_loop_answers_once_the_threshold_is_passed(session: Session) -> None:
    answer = "The candidate now matches the target (similarity 0.9928 >= 0.99)."
    model = ScriptedModel(similarity_replies(0.99, nudges=3) + [answer])
    events = run(Interpreter(model, session, max_rounds=8), "Match the target, threshold 0.99.")

    assert len(executions(events)) == 4 and len(model.prompts) == 5  # a round per reply
    printed = printed_similarities(model)
    assert printed == expected_similarities(4) == ["-0.1782", "0.7163", "0.9603", "0.9928"]
    assert all(float(s) < 0.99 for s in printed[:-1]) and float(printed[-1]) >= 0.99
    assert finished(events) == Finished("answered", answer, 5)


def test_similarity_loop_gives_up_at_max_rounds(session: Session) -> None:
    replies = similarity_replies(0.999, nudges=3)
    model = ScriptedModel(replies)
    events = run(Interpreter(model, session, max_rounds=4), "Match the target, threshold 0.999.")

    assert len(executions(events)) == 4 and len(model.prompts) == 4  # never asked a 5th time
    assert printed_similarities(model) == expected_similarities(3)  # the 4th is never read
    assert executions(events)[-1].stdout == f"similarity = {expected_similarities(4)[-1]}\n"
    last_prose = "Still below the threshold: I'll generate a candidate closer to the target."
    assert finished(events) == Finished("max_rounds", last_prose, 4)


# -- 5. bubble sort: a bug, its fix, and a second turn reusing the fix ----------------------
BUGGY_SORT = """
def bubble_sort(items, reverse=False):
    items = list(items)
    n = len(items)
    for i in range(n):
        for j in range(n - i):
            if (items[j] < items[j + 1]) if reverse else (items[j] > items[j + 1]):
                items[j], items[j + 1] = items[j + 1], items[j]
    return items

print(bubble_sort([64, 34, 25, 12, 22, 11, 90]))
"""


def test_bubble_sort_bug_is_fixed_and_reused_in_the_next_turn(session: Session) -> None:
    fixed_sort = BUGGY_SORT.replace("range(n - i)", "range(n - i - 1)")
    model = ScriptedModel(
        [
            reply("Here is a bubble sort, tried on a sample list.", BUGGY_SORT),
            reply("The inner loop reads one past the end; it must stop one earlier.", fixed_sort),
            "Fixed: bubble_sort([64, 34, 25, 12, 22, 11, 90]) is [11, 12, 22, 25, 34, 64, 90].",
            reply(
                "The function is already defined; I'll call it.",
                "print(bubble_sort([5, 3, 9, 1], reverse=True))",
            ),
            "Sorted descending: [9, 5, 3, 1].",
        ]
    )
    interpreter = Interpreter(model, session)
    first_turn = run(interpreter, "Write a bubble sort and show it working.")

    traceback = shown_after(model, 2)
    assert "IndexError: list index out of range" in traceback
    assert "if (items[j] < items[j + 1]) if reverse else (items[j] > items[j + 1]):" in traceback
    assert "[11, 12, 22, 25, 34, 64, 90]" in shown_after(model, 3)
    assert finished(first_turn).stop_reason == "answered"

    second_turn = run(interpreter, "Now sort [5, 3, 9, 1] descending.")
    (call,) = executions(second_turn)
    assert call.ok and call.stdout == "[9, 5, 3, 1]\n"  # no NameError: the fix was kept
    assert "[9, 5, 3, 1]" in shown_after(model, 5)
    assert finished(second_turn) == Finished("answered", "Sorted descending: [9, 5, 3, 1].", 2)
