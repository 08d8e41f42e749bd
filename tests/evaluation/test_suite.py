"""The bundled evaluation suite: it loads, its inputs are small and present, and every task is
solvable — a reference solution, replayed by a scripted model through the real loop and the
`repl` executor, is scored solved by the runner's own checks.

Each reference is what a good model would write: one python block, then a final answer. For
value and regex tasks the final answer is written from the task's check (the scripted model
cannot read results), so a second run without feedback judges the reference code's *printed
output* alone: that is what proves the expected values right. Negative controls show that the
checks reject wrong answers, missing files and blank plots.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest

from codeinterp.evaluation.runner import Evaluator, TaskResult
from codeinterp.evaluation.tasks import BUNDLED_SUITE, Task, load_tasks
from codeinterp.executors import Executor, get_executor
from codeinterp.models.scripted import ScriptedModel

TASKS = load_tasks()
BY_ID = {t.id: t for t in TASKS}
MAX_INPUT_BYTES = 20_000
CATEGORIES = {"math": 10, "data": 12, "plot": 6, "text": 6, "convert": 5, "algorithm": 5}

# -- reference solutions: task id -> the code a good model would write -----------------------
REFERENCE: dict[str, str] = {
    # math
    "compound-interest": """
        balance = 2500 * (1 + 0.045 / 12) ** (12 * 7)
        print(round(balance, 2))
    """,
    "sum-primes-below-1000": """
        def is_prime(n):
            if n < 2:
                return False
            i = 2
            while i * i <= n:
                if n % i == 0:
                    return False
                i += 1
            return True
        print(sum(n for n in range(1000) if is_prime(n)))
    """,
    "days-between-dates": """
        from datetime import date
        print((date(2024, 11, 2) - date(2021, 3, 15)).days)
    """,
    "factorial-digit-sum": """
        import math
        print(sum(int(d) for d in str(math.factorial(100))))
    """,
    "loan-payment": """
        principal, rate, n = 200_000, 0.06 / 12, 360
        payment = principal * rate / (1 - (1 + rate) ** -n)
        print(round(payment, 2))
    """,
    "lcm-1-to-20": """
        from functools import reduce
        from math import gcd
        print(reduce(lambda a, b: a * b // gcd(a, b), range(1, 21)))
    """,
    "friday-13th-count": """
        import datetime
        count = 0
        for year in range(2000, 2031):
            for month in range(1, 13):
                if datetime.date(year, month, 13).strftime('%A') == 'Friday':
                    count += 1
        print(count)
    """,
    "power-digit-sum": """
        print(sum(map(int, str(2 ** 1000))))
    """,
    "collatz-longest-chain": """
        def steps(n):
            count = 0
            while n != 1:
                n = n // 2 if n % 2 == 0 else 3 * n + 1
                count += 1
            return count
        best = max(range(1, 10000), key=steps)
        print(best, 'needs', steps(best), 'steps')
    """,
    "bacteria-growth": """
        cells, hours = 1000.0, 0
        while cells <= 1_000_000:
            cells *= 1.07
            hours += 1
        print(hours)
    """,
    # data analysis
    "sales-total-revenue": """
        import pandas as pd
        df = pd.read_csv('sales.csv')
        print(round((df['units'] * df['unit_price']).sum(), 2))
    """,
    "sales-top-region": """
        import pandas as pd
        df = pd.read_csv('sales.csv')
        df['revenue'] = df['units'] * df['unit_price']
        print(df.groupby('region')['revenue'].sum().idxmax())
    """,
    "sales-widget-east-units": """
        import pandas as pd
        df = pd.read_csv('sales.csv')
        print(df[(df['product'] == 'Widget') & (df['region'] == 'East')]['units'].sum())
    """,
    "sales-best-month": """
        import pandas as pd
        df = pd.read_csv('sales.csv', parse_dates=['date'])
        df['revenue'] = df['units'] * df['unit_price']
        print(df.groupby(df['date'].dt.month_name())['revenue'].sum().idxmax())
    """,
    "students-mean-math": """
        import pandas as pd
        print(round(pd.read_csv('students.csv')['math'].mean(), 2))
    """,
    "students-median-physics": """
        import pandas as pd
        print(pd.read_csv('students.csv')['physics'].median())
    """,
    "students-missing-count": """
        import pandas as pd
        df = pd.read_csv('students.csv')
        print(int(df[['math', 'physics', 'english']].isna().any(axis=1).sum()))
    """,
    "students-fill-english-std": """
        import pandas as pd
        english = pd.read_csv('students.csv')['english']
        print(round(english.fillna(english.mean()).std(), 2))
    """,
    "weather-lisbon-mean-temp": """
        import pandas as pd
        df = pd.read_csv('weather.csv')
        print(round(df.loc[df['city'] == 'Lisbon', 'temp_c'].mean(), 2))
    """,
    "weather-oslo-rainy-days": """
        import csv
        with open('weather.csv', newline='') as f:
            rows = list(csv.DictReader(f))
        print(sum(1 for r in rows if r['city'] == 'Oslo' and float(r['rain_mm']) > 5))
    """,
    "orders-messy-total": r"""
        import csv, re
        total = 0.0
        with open('orders_messy.csv', newline='') as f:
            for row in csv.DictReader(f):
                cleaned = re.sub(r'[^0-9.]', '', row['amount'])
                if cleaned:
                    total += float(cleaned)
        print(round(total, 2))
    """,
    "orders-distinct-customers": """
        import csv
        with open('orders_messy.csv', newline='') as f:
            names = {' '.join(r['customer'].split()).lower() for r in csv.DictReader(f)}
        print(len(names))
    """,
    "employees-berlin-salary": """
        import pandas as pd
        merged = pd.read_csv('employees.csv').merge(pd.read_csv('departments.csv'), on='dept_id')
        print(merged.loc[merged['location'] == 'Berlin', 'salary'].sum())
    """,
    "employees-top3-salaries": """
        import pandas as pd
        print(', '.join(pd.read_csv('employees.csv').nlargest(3, 'salary')['name']))
    """,
    "employees-dept-highest-avg": """
        import pandas as pd
        merged = pd.read_csv('employees.csv').merge(pd.read_csv('departments.csv'), on='dept_id')
        print(merged.groupby('dept_name')['salary'].mean().idxmax())
    """,
    # plots
    "plot-sine": """
        import numpy as np
        import matplotlib.pyplot as plt
        x = np.linspace(0, 2 * np.pi, 200)
        plt.plot(x, np.sin(x))
        plt.title('y = sin(x)')
        plt.savefig('sine.png')
    """,
    "plot-revenue-by-region": """
        import pandas as pd
        import matplotlib.pyplot as plt
        df = pd.read_csv('sales.csv')
        df['revenue'] = df['units'] * df['unit_price']
        df.groupby('region')['revenue'].sum().plot(kind='bar')
        plt.ylabel('revenue')
        plt.savefig('revenue_by_region.png')
    """,
    "plot-math-histogram": """
        import pandas as pd
        import matplotlib.pyplot as plt
        plt.hist(pd.read_csv('students.csv')['math'].dropna(), bins=10)
        plt.savefig('math_hist.png')
    """,
    "plot-math-vs-physics": """
        import pandas as pd
        import matplotlib.pyplot as plt
        df = pd.read_csv('students.csv').dropna(subset=['math', 'physics'])
        plt.scatter(df['math'], df['physics'])
        plt.xlabel('math')
        plt.ylabel('physics')
        plt.savefig('math_vs_physics.png')
    """,
    "plot-oslo-temperature": """
        import pandas as pd
        import matplotlib.pyplot as plt
        df = pd.read_csv('weather.csv', parse_dates=['date'])
        oslo = df[df['city'] == 'Oslo']
        plt.plot(oslo['date'], oslo['temp_c'])
        plt.savefig('oslo_temp.png')
    """,
    "plot-units-pie": """
        import pandas as pd
        import matplotlib.pyplot as plt
        units = pd.read_csv('sales.csv').groupby('product')['units'].sum()
        plt.pie(units, labels=units.index, autopct='%1.0f%%')
        plt.savefig('units_pie.png')
    """,
    # text cleanup
    "text-collapse-punctuation": r"""
        import re
        with open('messy_reply.txt', encoding='utf-8') as f:
            text = f.read()
        with open('clean_reply.txt', 'w', encoding='utf-8') as f:
            f.write(re.sub(r'([!?.,;:])\1+', r'\1', text))
    """,
    "text-extract-emails": r"""
        import re
        text = open('contacts.txt', encoding='utf-8').read()
        found = re.findall(r'[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}', text)
        emails = sorted({e.lower() for e in found})
        with open('emails.txt', 'w') as f:
            f.write('\n'.join(emails) + '\n')
        print(emails)
    """,
    "text-normalise-phones": r"""
        import re
        text = open('contacts.txt', encoding='utf-8').read()
        phones = []
        for a, b, c in re.findall(r'\(?\b(\d{3})\)?[-. ](\d{3})[-. ](\d{4})\b', text):
            number = f'{a}-{b}-{c}'
            if number not in phones:
                phones.append(number)
        with open('phones.txt', 'w') as f:
            f.write('\n'.join(phones))
        print(phones)
    """,
    "text-count-iso-dates": r"""
        import re
        text = open('notes.txt', encoding='utf-8').read()
        print(len(re.findall(r'\b\d{4}-\d{2}-\d{2}\b', text)))
    """,
    "text-normalise-whitespace": r"""
        import re
        with open('spacing.txt', encoding='utf-8') as f:
            lines = [re.sub(r'[ \t]+', ' ', line).strip() for line in f]
        with open('spacing_clean.txt', 'w', encoding='utf-8') as f:
            f.write('\n'.join(line for line in lines if line) + '\n')
    """,
    "text-count-the": r"""
        import re
        text = open('article.txt', encoding='utf-8').read()
        print(len(re.findall(r'\bthe\b', text, flags=re.IGNORECASE)))
    """,
    # file conversions
    "convert-csv-to-json": """
        import pandas as pd
        pd.read_csv('departments.csv').to_json('departments.json', orient='records', indent=2)
    """,
    "convert-json-to-csv": """
        import json
        import pandas as pd
        with open('products.json') as f:
            pd.DataFrame(json.load(f)).to_csv('products.csv', index=False)
    """,
    "convert-word-counts": """
        import json, re
        from collections import Counter
        words = re.findall('[a-z]+', open('poem.txt', encoding='utf-8').read().lower())
        with open('word_counts.json', 'w') as f:
            json.dump(dict(Counter(words)), f, indent=2)
    """,
    "convert-nested-json-to-csv": """
        import csv, json
        with open('orders.json') as f:
            orders = json.load(f)
        with open('order_totals.csv', 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['order_id', 'customer_name', 'city', 'total'])
            for o in orders:
                total = round(sum(i['qty'] * i['price'] for i in o['items']), 2)
                customer = o['customer']
                writer.writerow([o['order_id'], customer['name'], customer['city'], total])
    """,
    "convert-class-means-json": """
        import json
        import pandas as pd
        means = pd.read_csv('students.csv').groupby('class')['math'].mean().round(2)
        with open('class_math_means.json', 'w') as f:
            json.dump(means.to_dict(), f)
    """,
    # small algorithms
    "bubble-sort": """
        def bubble_sort(items):
            items = list(items)
            for end in range(len(items) - 1, 0, -1):
                for i in range(end):
                    if items[i] > items[i + 1]:
                        items[i], items[i + 1] = items[i + 1], items[i]
            return items
        print(bubble_sort([64, 34, 25, 12, 22, 11, 90, 5]))
    """,
    "bubble-sort-swaps": """
        items = [38, 7, 91, 3, 56, 24, 72, 15, 60, 9, 44, 81]
        swaps = 0
        for end in range(len(items) - 1, 0, -1):
            for i in range(end):
                if items[i] > items[i + 1]:
                    items[i], items[i + 1] = items[i + 1], items[i]
                    swaps += 1
        print(swaps)
    """,
    "fibonacci-60": """
        a, b = 1, 1
        for _ in range(60 - 2):
            a, b = b, a + b
        print(b)
    """,
    "nth-prime": """
        primes = []
        n = 2
        while len(primes) < 2024:
            if all(n % p for p in primes if p * p <= n):
                primes.append(n)
            n += 1
        print(primes[-1])
    """,
    "double-palindromes": """
        def is_pal(s):
            return s == s[::-1]
        print(sum(1 for n in range(1, 100001) if is_pal(str(n)) and is_pal(format(n, 'b'))))
    """,
    "binary-search-index": """
        def binary_search(items, target):
            lo, hi = 0, len(items) - 1
            while lo <= hi:
                mid = (lo + hi) // 2
                if items[mid] == target:
                    return mid
                if items[mid] < target:
                    lo = mid + 1
                else:
                    hi = mid - 1
            return -1
        data = [3, 8, 14, 19, 23, 31, 37, 42, 50, 58, 61, 67, 73, 79, 84, 88, 95, 102, 117, 120]
        print(binary_search(data, 79))
    """,
}

# Final answers for regex tasks (what the model would say after reading its results).
REGEX_ANSWERS = {
    "sales-top-region": "The region with the highest total revenue is West.",
    "sales-best-month": "July has the highest total revenue.",
    "employees-top3-salaries": "The three highest-paid employees are Hugo Martin, Goran Petrov "
    "and Ines Moreau.",
    "employees-dept-highest-avg": "Marketing has the highest average salary.",
    "bubble-sort": "The sorted list is [5, 11, 12, 22, 25, 34, 64, 90].",
}


def code_reply(code: str) -> str:
    return f"Let me compute this.\n\n```python\n{dedent(code).strip()}\n```"


def final_answer(task: Task) -> str:
    if task.check.kind == "value":
        return f"The answer is {task.check.value}."
    if task.check.kind == "regex":
        return REGEX_ANSWERS[task.id]
    return "Done: the file is written in the working directory."


# -- running tasks through the real loop -------------------------------------------------------
@pytest.fixture(scope="module")
def executor() -> Iterator[Executor]:
    with get_executor("repl", timeout_s=60) as ex:
        yield ex


def run(executor: Executor, task: Task, replies: list[str], *, feedback: bool = True) -> TaskResult:
    """One task through the runner; the factory builds the task's scripted model."""
    scripts = {task.id: replies}
    evaluator = Evaluator(
        lambda: ScriptedModel(list(scripts[task.id])),
        executor,
        feedback=feedback,
        cell_timeout_s=60,
    )
    return evaluator.run_task(task)


# -- the suite's shape -------------------------------------------------------------------------
def test_bundled_suite_loads_with_enough_unique_tasks() -> None:
    assert BUNDLED_SUITE.is_file()
    assert len(TASKS) >= 40
    ids = [t.id for t in TASKS]
    assert len(ids) == len(set(ids))
    primary = Counter(t.tags[0] for t in TASKS if t.tags)
    for category, minimum in CATEGORIES.items():
        assert primary[category] >= minimum, (category, primary)
    assert all(t.tags and t.tags[0] in CATEGORIES for t in TASKS)


def test_input_files_exist_are_small_and_named_in_their_prompts() -> None:
    used: set[Path] = set()
    for task in TASKS:
        for path in task.files:
            assert path.is_file(), (task.id, path)
            assert path.stat().st_size < MAX_INPUT_BYTES, (task.id, path)
            assert path.name in task.prompt, f"{task.id}: the prompt does not name {path.name}"
            used.add(path)
    data = BUNDLED_SUITE.parent / "data"
    assert {p.resolve() for p in data.iterdir() if p.is_file()} == used, "unused input files"


def test_checks_are_well_formed() -> None:
    for task in TASKS:
        check = task.check
        if check.kind == "value":
            assert check.tolerance is not None, f"{task.id}: give an explicit tolerance"
        elif check.kind == "python":
            assert check.python is not None
            compile(check.python, task.id, "exec")


def test_every_task_has_a_reference_solution() -> None:
    assert set(REFERENCE) == set(BY_ID)
    assert set(REGEX_ANSWERS) == {t.id for t in TASKS if t.check.kind == "regex"}


# -- every task is solvable --------------------------------------------------------------------
@pytest.mark.parametrize("task_id", list(BY_ID))
def test_reference_solution_is_scored_solved(executor: Executor, task_id: str) -> None:
    task = BY_ID[task_id]
    result = run(executor, task, [code_reply(REFERENCE[task_id]), final_answer(task)])
    assert result.solved, result.detail
    assert result.stop_reason == "answered"
    assert (result.executions, result.errors, result.format_failures) == (1, 0, 0)


TEXT_CHECKED = [t.id for t in TASKS if t.check.kind in ("value", "regex")]


@pytest.mark.parametrize("task_id", TEXT_CHECKED)
def test_reference_code_output_alone_passes_the_check(executor: Executor, task_id: str) -> None:
    """Without feedback the check reads the code's printed output: the expected value is what
    the reference computes, not just what the scripted final answer says."""
    task = BY_ID[task_id]
    result = run(executor, task, [code_reply(REFERENCE[task_id])], feedback=False)
    assert result.solved, result.detail
    assert result.errors == 0


FILE_CHECKED = [t.id for t in TASKS if t.check.kind == "python"]


@pytest.mark.parametrize("task_id", FILE_CHECKED)
def test_python_check_fails_when_nothing_is_written(executor: Executor, task_id: str) -> None:
    task = BY_ID[task_id]
    result = run(executor, task, [code_reply("print('nothing written')"), final_answer(task)])
    assert not result.solved
    assert result.detail.startswith("check failed")


# -- negative controls -------------------------------------------------------------------------
def test_wrong_final_answer_to_a_value_task_is_unsolved(executor: Executor) -> None:
    task = BY_ID["sum-primes-below-1000"]
    replies = [code_reply(REFERENCE[task.id]), "The sum of the primes below 1000 is 76128."]
    result = run(executor, task, replies)
    assert not result.solved
    assert "expected 76127" in result.detail


def test_money_tolerance_rejects_a_cent_rounding_slip(executor: Executor) -> None:
    task = BY_ID["loan-payment"]
    replies = [code_reply(REFERENCE[task.id]), "The monthly payment is $1,199.12."]
    assert not run(executor, task, replies).solved
    replies = [code_reply(REFERENCE[task.id]), "The monthly payment is $1,199.10."]
    assert run(executor, task, replies).solved


def test_wrong_word_for_a_regex_task_is_unsolved(executor: Executor) -> None:
    task = BY_ID["sales-top-region"]
    replies = [code_reply(REFERENCE[task.id]), "The North region has the highest revenue."]
    result = run(executor, task, replies)
    assert not result.solved


def test_wrong_code_output_without_feedback_is_unsolved(executor: Executor) -> None:
    task = BY_ID["students-mean-math"]
    wrong = """
        import pandas as pd
        print(round(pd.read_csv('students.csv')['math'].fillna(0).mean(), 2))
    """
    result = run(executor, task, [code_reply(wrong)], feedback=False)
    assert not result.solved


def test_wrong_file_content_fails_a_python_check(executor: Executor) -> None:
    task = BY_ID["convert-csv-to-json"]
    wrong = """
        import json
        json.dump([{'dept_id': 10, 'dept_name': 'Engineering', 'location': 'Berlin'}],
                  open('departments.json', 'w'))
    """
    result = run(executor, task, [code_reply(wrong), final_answer(task)])
    assert not result.solved
    assert "AssertionError" in result.detail


def test_blank_image_fails_a_plot_check(executor: Executor) -> None:
    task = BY_ID["plot-sine"]
    blank = """
        import matplotlib.pyplot as plt
        plt.figure().savefig('sine.png')
    """
    result = run(executor, task, [code_reply(blank), final_answer(task)])
    assert not result.solved
    assert "blank" in result.detail or "small" in result.detail


def test_the_check_ignores_what_the_model_defined(executor: Executor) -> None:
    """A python check runs in a fresh interpreter: a variable the model set cannot satisfy it."""
    task = BY_ID["text-extract-emails"]
    cheat = "expected = []\nopen('emails.txt', 'w').close()"
    result = run(executor, task, [code_reply(cheat), final_answer(task)])
    assert not result.solved
