"""Hostile input beyond files (issue 23): every command's numbers, names, filters, method parameters, paths and flag
combinations, each a different way to be wrong, run through the real `lessdb` entry point in-process (as
tests/test_bad_input.py does) against one real workspace with a warmup run (tiny Llama), its features and two
selections, asserting

- exit 1 or 2 (never 0, never 70) and no traceback,
- a message that names the flag, field or name that is wrong,
- nothing written: LanceDB versions, DuckDB row counts of every table, the checkpoint and scratch folders;
- where it matters, that it was refused before any model loaded (quickly).

The counts of inputs and exit codes go to the robustness summary at the end of the run (tests/suite_tally.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import suite_tally
from conftest import write_jsonl
from lessdb import Workspace
from lessdb.cli.main import EXIT_INTERNAL
from lessdb.runs.config import build_warmup_config
from lessdb.featurize import FeaturizeConfig, featurize_run
from lessdb.ingest import ingest_files
from lessdb.selection import SelectConfig, select
from lessdb.tasks.catalog import add_tasks
from lessdb.runs.warmup import run_warmup
from test_bad_input import Case, lessdb, msgs, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BIG = str(2 ** 63)
HUGE = "9" * 40
DEEP_NOT = "NOT " * 1200 + "n_turns = 2"
DEEP_FN = "abs(" * 1200 + "n_turns" + ")" * 1200 + " = 2"


def c(name: str, *args, code: int, expect: tuple | str = (), files: dict | None = None) -> Case:
    return Case(name, tuple(args), code, (expect,) if isinstance(expect, str) else tuple(expect), files or {})


def warmup(name: str, *flags, code: int = 2, expect=()) -> Case:
    return c(f"warmup-{name}", "warmup", "--pool", "p1", "--model", "tiny", "--device", "cpu", *flags, code=code,
             expect=expect)


def train(name: str, *flags, code: int = 2, expect=()) -> Case:
    return c(f"train-{name}", "train", "--model", "tiny", "--device", "cpu", *flags, code=code, expect=expect)


def featurize(name: str, *flags, code: int = 2, expect=()) -> Case:
    return c(f"featurize-{name}", "featurize", "--run", "ref", "--dim", "64", "--device", "cpu", *flags, code=code,
             expect=expect)


def sel(name: str, *flags, code: int = 1, expect=()) -> Case:
    return c(f"select-{name}", "select", "--task", "toy", "--pool", "p1", *flags, code=code, expect=expect)


def mp(name: str, method: str, param: str, code: int = 1, expect=()) -> Case:
    return c(f"method-param-{method}-{name}", "select", "--task", "toy", "--pool", "p1", "--run", "ref", "--count",
             "2", "--method", method, "--method-param", param, code=code,
             expect=expect or ("--method-param", param.split("=")[0]))


def where(name: str, text: str, *expect: str, command: str = "select", code: int = 2) -> Case:
    head = (("select", "--task", "toy", "--pool", "p1", "--method", "random", "--count", "2") if command == "select"
            else ("featurize", "--run", "ref", "--dim", "64", "--device", "cpu"))
    return c(f"{command}-where-{name}", *head, "--where", text, code=code, expect=("--where", *expect))


VOLATILE = ["random() < 0.5", "now() > TIMESTAMP '2020-01-01'", "current_date > DATE '2020-01-01'",
            "current_setting('threads') = '1'", "gen_random_uuid() IS NOT NULL", "uuid() IS NOT NULL",
            "today() > DATE '2000-01-01'", "setseed(0.5) IS NULL", "nextval('s') > 0",
            "get_current_timestamp() > TIMESTAMP '2000-01-01'", "current_schema() = 'main'",
            "version() <> ''", "ago(INTERVAL 1 DAY) < TIMESTAMP '2999-01-01'", "current_timestamp > TIMESTAMP '2000-01-01'",
            "length(current_query()) > 0", "transaction_timestamp() > TIMESTAMP '2000-01-01'",
            "uuidv7() IS NOT NULL", "current_user = 'x'"]

CASES = [
    # -- warmup: numbers out of range, refused while parsing or validating, before a run is recorded ---------------
    warmup("lr-nan", "--lr", "nan", code=1, expect="--lr"),
    warmup("lr-inf", "--lr", "inf", code=1, expect="--lr"),
    warmup("lr-neg-inf", "--lr", "-inf", code=1, expect="--lr"),
    warmup("lr-zero", "--lr", "0", code=1, expect="--lr"),
    warmup("lr-negative", "--lr", "-0.1", code=1, expect="--lr"),
    warmup("lr-word", "--lr", "fast", expect="--lr"),
    warmup("epochs-zero", "--epochs", "0", code=1, expect="--epochs"),
    warmup("epochs-negative", "--epochs", "-2", code=1, expect="--epochs"),
    warmup("epochs-float", "--epochs", "1.5", expect="--epochs"),
    warmup("epochs-huge", "--epochs", HUGE, expect="--epochs"),
    warmup("batch-size-zero", "--batch-size", "0", code=1, expect="--batch-size"),
    warmup("micro-batch-size-zero", "--micro-batch-size", "0", code=1, expect="--micro-batch-size"),
    warmup("micro-batch-size-negative", "--micro-batch-size", "-8", code=1, expect="--micro-batch-size"),
    warmup("warmup-ratio-one", "--warmup-ratio", "1", code=1, expect="--warmup-ratio"),
    warmup("warmup-ratio-negative", "--warmup-ratio", "-0.1", code=1, expect="--warmup-ratio"),
    warmup("warmup-ratio-nan", "--warmup-ratio", "nan", code=1, expect="--warmup-ratio"),
    warmup("max-seq-length-tiny", "--max-seq-length", "4", code=1, expect="--max-seq-length"),
    warmup("max-seq-length-huge", "--max-seq-length", BIG, expect="--max-seq-length"),
    warmup("percentage-zero", "--percentage", "0", code=1, expect="--percentage"),
    warmup("percentage-above-one", "--percentage", "1.5", code=1, expect="--percentage"),
    warmup("percentage-nan", "--percentage", "nan", code=1, expect="--percentage"),
    warmup("max-examples-zero", "--max-examples", "0", code=1, expect="--max-examples"),
    warmup("seed-negative", "--seed", "-1", expect="--seed"),
    warmup("seed-2-63", "--seed", BIG, expect="--seed"),
    warmup("seed-float", "--seed", "1.5", expect="--seed"),
    warmup("lora-r-zero", "--lora-r", "0", code=1, expect="--lora-r"),
    warmup("lora-alpha-zero", "--lora-alpha", "0", code=1, expect="--lora-alpha"),
    warmup("lora-dropout-one", "--lora-dropout", "1", code=1, expect="--lora-dropout"),
    warmup("lora-dropout-nan", "--lora-dropout", "nan", code=1, expect="--lora-dropout"),
    warmup("lora-dropout-negative", "--lora-dropout", "-0.5", code=1, expect="--lora-dropout"),
    warmup("target-modules-empty", "--target-modules", " , ", code=1, expect="--target-modules"),
    warmup("preset-unknown", "--preset", "gpu-huge", expect="--preset"),
    warmup("pool-unknown", "--pool", "nope", code=1, expect="nope"),
    c("warmup-pool-missing", "warmup", "--model", "tiny", code=1, expect="pool"),
    warmup("resume-with-settings", "--resume", "--run-id", "ref", "--lr", "0.1", code=1, expect=("--lr", "resum")),
    c("warmup-resume-unknown-run", "warmup", "--resume", "--run-id", "nope", code=1, expect="nope"),
    warmup("model-missing-folder", "--model", "/nonexistent/model/dir", code=1, expect="/nonexistent/model/dir"),
    # -- train ----------------------------------------------------------------------------------------------------
    train("selection-unknown", "--selection", "no-such-sel", code=1, expect="no-such-sel"),
    train("random-zero", "--selection", "random:0", "--pool", "p1", code=1, expect="random:0"),
    train("random-above-one", "--selection", "random:1.5", "--pool", "p1", code=1, expect="random:1.5"),
    train("random-nan", "--selection", "random:nan", "--pool", "p1", code=1, expect="random:nan"),
    train("random-word", "--selection", "random:half", "--pool", "p1", code=1, expect="random:half"),
    train("full-two-pools", "--selection", "full", code=1, expect="--pool"),
    train("lr-nan", "--selection", "sel", "--lr", "nan", code=1, expect="--lr"),
    train("seed-negative", "--selection", "sel", "--seed", "-5", expect="--seed"),
    train("epochs-zero", "--selection", "sel", "--epochs", "0", code=1, expect="--epochs"),
    train("warmup-only-setting", "--selection", "sel", "--percentage", "0.5", code=2, expect="--percentage"),
    c("train-resume-nothing", "train", "--resume", "--run-id", "nope", code=1, expect="nope"),
    # -- featurize --------------------------------------------------------------------------------------------------
    c("featurize-no-run", "featurize", "--dim", "64", code=1, expect="--run"),
    c("featurize-run-unknown", "featurize", "--run", "nope", "--dim", "64", code=1, expect="nope"),
    featurize("dim-zero", "--dim", "0", code=1, expect="--dim"),
    featurize("dim-negative", "--dim", "-64", code=1, expect="--dim"),
    featurize("dim-2-63", "--dim", BIG, expect="--dim"),
    featurize("shard-out-of-range", "--shard", "2/2", code=1, expect="--shard"),
    featurize("shard-zero-of-zero", "--shard", "0/0", code=1, expect="--shard"),
    featurize("shard-word", "--shard", "first", code=1, expect="--shard"),
    featurize("shard-negative", "--shard", "-1/2", code=1, expect="--shard"),
    featurize("batch-size-zero", "--batch-size", "0", code=1, expect="--batch-size"),
    featurize("seed-negative", "--seed", "-1", expect="--seed"),
    featurize("seed-2-64", "--seed", str(2 ** 64), expect="--seed"),
    featurize("checkpoint-unknown", "--checkpoints", "9", code=1, expect="9"),
    featurize("checkpoints-word", "--checkpoints", "last", code=1, expect="--checkpoints"),
    featurize("max-seq-length-one", "--max-seq-length", "1", code=1, expect="--max-seq-length"),
    featurize("sketch-unknown", "--sketch", "gaussian", expect="--sketch"),
    featurize("dtype-int8", "--dtype", "int8", expect="--dtype"),
    featurize("grad-unknown", "--grad", "adagrad", expect="--grad"),
    featurize("precision-fp8", "--precision", "fp8", expect="--precision"),
    featurize("engine-unknown", "--engine", "spark", expect="--engine"),
    featurize("sketch-nnz-zero", "--sketch", "sparse-sign", "--sketch-nnz", "0", code=1, expect="--sketch-nnz"),
    where("matches-nothing", "total_chars < 0", "matches no candidate", command="featurize", code=1),
    where("volatile-random", "random() < 0.5", "random()", command="featurize"),
    where("volatile-now", "now() > TIMESTAMP '2020-01-01'", "now()", command="featurize"),
    where("deep-not", DEEP_NOT, "nested too deeply", command="featurize"),
    where("escape", "1=1) OR (1=1", "not a valid SQL expression", command="featurize"),
    # -- select: k, seeds, methods ----------------------------------------------------------------------------------
    sel("count-zero", "--method", "random", "--count", "0", expect="--count"),
    sel("count-negative", "--method", "random", "--count", "-3", expect="--count"),
    sel("count-above-pool", "--method", "random", "--count", "3000", expect=("--count", "3,000", "24")),
    sel("count-above-pool-less", "--run", "ref", "--count", "3000", expect=("--count", "3,000")),
    sel("count-above-pool-bm25", "--method", "bm25", "--count", "25", expect=("--count", "25")),
    sel("count-2-63", "--method", "random", "--count", BIG, code=2, expect="--count"),
    sel("count-float", "--method", "random", "--count", "2.5", code=2, expect="--count"),
    sel("percentage-zero", "--method", "random", "--percentage", "0", expect="--percentage"),
    sel("percentage-two", "--method", "random", "--percentage", "2", expect="--percentage"),
    sel("percentage-nan", "--method", "random", "--percentage", "nan", code=1, expect="--percentage"),
    sel("percentage-inf", "--method", "random", "--percentage", "inf", code=1, expect="--percentage"),
    sel("percentage-k-below-one", "--method", "random", "--percentage", "0.01", expect=("--percentage", "< 1")),
    sel("count-and-percentage", "--method", "random", "--count", "2", "--percentage", "0.5",
        expect=("--percentage", "--count")),
    sel("seed-negative", "--method", "random", "--count", "2", "--seed", "-1", code=2, expect="--seed"),
    sel("seed-2-63", "--method", "random", "--count", "2", "--seed", BIG, code=2, expect="--seed"),
    sel("seed-huge", "--method", "random", "--count", "2", "--seed", HUGE, code=2, expect="--seed"),
    sel("method-unknown", "--method", "magic", "--count", "2", code=2, expect="--method"),
    sel("task-unknown", "--method", "random", "--count", "2", "--task", "nope", expect="nope"),
    c("select-task-missing", "select", "--pool", "p1", "--method", "random", "--count", "2", code=1, expect="--task"),
    sel("task-weight-word", "--method", "random", "--count", "2", "--task", "toy2:heavy", expect="heavy"),
    sel("task-weight-negative", "--method", "random", "--count", "2", "--task", "toy2:-1", expect="-1"),
    sel("pool-unknown", "--method", "random", "--count", "2", "--pool", "nope", expect="nope"),
    sel("run-unknown", "--run", "nope", "--count", "2", expect="nope"),
    sel("feature-set-unknown", "--feature-set", "nope", "--count", "2", expect="nope"),
    sel("checkpoint-unknown", "--run", "ref", "--count", "2", "--checkpoints", "7", expect="7"),
    sel("checkpoints-word", "--run", "ref", "--count", "2", "--checkpoints", "all-of-them", code=1,
        expect="--checkpoints"),
    sel("val-aggregation-unknown", "--count", "2", "--val-aggregation", "median", code=2, expect="--val-aggregation"),
    sel("val-truncation-middle", "--count", "2", "--val-truncation", "middle", code=2, expect="--val-truncation"),
    sel("val-max-seq-length-one", "--run", "ref", "--count", "2", "--val-max-seq-length", "1",
        expect="--val-max-seq-length"),
    sel("balance-unknown", "--count", "2", "--balance", "fair", code=2, expect="--balance"),
    sel("max-tokens-zero", "--method", "random", "--max-tokens", "0", expect="--max-tokens"),
    sel("max-tokens-negative", "--method", "random", "--max-tokens", "-100", expect="--max-tokens"),
    sel("budget-on-unknown", "--method", "random", "--max-tokens", "100", "--budget-on", "prompt", code=2,
        expect="--budget-on"),
    sel("dedup-zero", "--method", "random", "--count", "2", "--dedup", "0", expect="--dedup"),
    sel("dedup-above-one", "--method", "random", "--count", "2", "--dedup", "1.5", expect="--dedup"),
    sel("dedup-nan", "--method", "random", "--count", "2", "--dedup", "nan", code=1, expect="--dedup"),
    sel("dedup-text-negative", "--method", "random", "--count", "2", "--dedup-text", "-0.2", expect="--dedup-text"),
    sel("prefilter-no-factor", "--run", "ref", "--count", "2", "--prefilter", "32", expect="--prefilter"),
    sel("prefilter-words", "--run", "ref", "--count", "2", "--prefilter", "axb", expect="--prefilter"),
    sel("prefilter-zero-dim", "--run", "ref", "--count", "2", "--prefilter", "0x2", expect="--prefilter"),
    sel("prefilter-not-dividing", "--run", "ref", "--count", "2", "--prefilter", "48x2", expect="--prefilter"),
    sel("prefilter-random-method", "--method", "random", "--count", "2", "--prefilter", "32x2",
        expect=("--prefilter", "--method")),
    sel("engine-unknown", "--count", "2", "--engine", "spark", code=2, expect="--engine"),
    sel("replay-unknown", "--replay", "no-such-selection", expect="no-such-selection"),
    sel("output-folder", "--method", "random", "--count", "2", "--output", "{d}/adir", code=2, expect="adir"),
    sel("output-exists", "--method", "random", "--count", "2", "--output", "{d}/exists.jsonl", code=2,
        expect=("exists.jsonl", "--force")),
    sel("name-taken", "--method", "random", "--count", "2", "--name", "sel", expect="sel"),
    # -- select: method parameters, each named in its error ---------------------------------------------------------
    mp("k1-nan", "bm25", "k1=nan"),
    mp("k1-inf", "bm25", "k1=inf"),
    mp("k1-negative", "bm25", "k1=-1"),
    mp("k1-overflow", "bm25", "k1=1e300"),
    mp("k1-word", "bm25", "k1=big"),
    mp("b-above-one", "bm25", "b=2"),
    mp("b-nan", "bm25", "b=nan"),
    mp("epsilon-negative", "bm25", "epsilon=-0.5"),
    mp("unknown-name", "bm25", "k2=1"),
    mp("buckets-zero", "dsir", "buckets=0"),
    mp("buckets-huge", "dsir", f"buckets={HUGE}"),
    mp("buckets-float", "dsir", "buckets=2.5"),
    mp("floor-zero", "dsir", "floor=0"),
    mp("floor-nan", "dsir", "floor=nan"),
    mp("fusion-unknown", "hybrid", "fusion=max"),
    mp("rrf-k-negative", "hybrid", "rrf_k=-1"),
    mp("gradient-weight-above-one", "hybrid", "gradient_weight=2"),
    mp("gradient-weight-nan", "hybrid", "gradient_weight=nan"),
    mp("pooling-unknown", "rds", "pooling=max"),
    mp("params-for-less", "less", "k1=1.2"),
    mp("no-equals", "bm25", "k1", expect=("--method-param", "KEY=VALUE")),
    mp("empty-key", "bm25", "=1.2", expect=("--method-param", "KEY=VALUE")),
    mp("bool-word", "random", "longest=maybe", expect=("--method-param",)),
    # -- select --where: functions that would not replay, nesting, other ways to be wrong ----------------------------
    *[where(f"volatile-{i}-{v.split('(')[0].split()[0]}", v, "changes from one run to the next")
      for i, v in enumerate(VOLATILE)],
    where("deep-not", DEEP_NOT, "nested too deeply"),
    where("deep-functions", DEEP_FN, "nested too deeply"),
    where("deep-not-999", "NOT " * 999 + "n_turns = 2", "nested too deeply"),
    where("deep-order-by", "TRUE ORDER BY " + "NOT " * 600 + "n_turns", "ORDER BY"),
    where("matches-nothing", "total_chars < 0", "matched none", code=1),
    where("having", "TRUE GROUP BY pool HAVING count(*) > 1", "GROUP BY"),
    where("qualify", "TRUE QUALIFY n_turns > 1", "QUALIFY"),
    where("sample", "TRUE USING SAMPLE 10", "SAMPLE"),
    where("cte", "n_turns IN (WITH x AS (SELECT 1) SELECT * FROM x)", "subquery"),
    where("star", "* IS NOT NULL", "'*'"),
    where("positional", "#1 > 0", "positional"),
    where("aggregate", "count(*) > 1", "Binder Error"),
    where("nul-byte", "n_turns = 2\x00", "NUL"),
    where("read-file", "read_text('/etc/passwd') IS NOT NULL", "Binder Error"),
    where("getenv", "getenv('HOME') = '/root'", "getenv"),
    where("string-as-bool", "'maybe'", "Conversion Error"),
    where("compare-list-to-int", "messages > 3", "Binder Error"),
    # -- export, report, show, explain, diagnose, diff: names and numbers ---------------------------------------------
    c("export-format-xml", "export", "sel", "--output", "{d}/x.xml", "--format", "xml", code=2, expect="--format"),
    c("export-unknown-name", "export", "nope", "--output", "{d}/n.jsonl", code=1, expect="nope"),
    c("report-unknown", "report", "nope", "--output", "{d}/r.html", code=1, expect="nope"),
    c("report-examples-negative", "report", "sel", "--output", "{d}/r.html", "--examples", "-1", code=2,
      expect="--examples"),
    c("report-compare-unknown", "report", "sel", "--output", "{d}/r.html", "--compare", "nope", code=1,
      expect="nope"),
    c("show-unknown", "show", "nope", code=1, expect="nope"),
    c("show-top-huge", "show", "sel", "--top", HUGE, code=2, expect="--top"),
    c("explain-unknown", "explain", "nope", code=1, expect="nope"),
    c("explain-top-negative", "explain", "sel", "--top", "-1", code=2, expect="--top"),
    c("explain-examples-negative", "explain", "sel", "--examples", "-2", code=2, expect="--examples"),
    c("explain-not-a-member", "explain", "sel", "no-such-candidate", code=1, expect="no-such-candidate"),
    c("explain-random-method", "explain", "rsel", code=1, expect="random"),
    c("diagnose-unknown", "diagnose", "nope", code=1, expect="nope"),
    c("diff-unknown-first", "diff", "nope", "sel", code=1, expect="nope"),
    c("diff-unknown-second", "diff", "sel", "nope", code=1, expect="nope"),
    # -- eval -------------------------------------------------------------------------------------------------------
    c("eval-run-unknown", "eval", "--run", "nope", "--task", "toy", "--metrics", "loss", code=1, expect="nope"),
    c("eval-task-unknown", "eval", "--run", "ref", "--task", "nope", "--metrics", "loss", code=1, expect="nope"),
    c("eval-run-and-model", "eval", "--run", "ref", "--model", "tiny", "--task", "toy", code=1,
      expect=("--run", "--model")),
    c("eval-limit-zero", "eval", "--run", "ref", "--task", "toy", "--limit", "0", code=1, expect="--limit"),
    c("eval-seed-negative", "eval", "--run", "ref", "--task", "toy", "--seed", "-1", code=2, expect="--seed"),
    c("eval-metrics-unknown", "eval", "--run", "ref", "--task", "toy", "--metrics", "bleu", code=2,
      expect="--metrics"),
    c("eval-epoch-unknown", "eval", "--run", "ref", "--task", "toy", "--metrics", "loss", "--epoch", "9", code=1,
      expect="9"),
    c("eval-batch-size-zero", "eval", "--run", "ref", "--task", "toy", "--batch-size", "0", code=1,
      expect="--batch-size"),
    c("eval-data-dir-missing", "eval", "--run", "ref", "--task", "bbh", "--data-dir", "{d}/no-such-dir", code=1,
      expect="no-such-dir"),
    c("eval-loss-truncation-unknown", "eval", "--run", "ref", "--task", "toy", "--loss-truncation", "middle",
      code=2, expect="--loss-truncation"),
    # -- embed, fold ------------------------------------------------------------------------------------------------
    c("embed-run-unknown", "embed", "--run", "nope", code=1, expect="nope"),
    c("embed-pooling-unknown", "embed", "--run", "ref", "--pooling", "max", code=2, expect="--pooling"),
    c("embed-shard-out-of-range", "embed", "--run", "ref", "--shard", "3/2", code=1, expect="--shard"),
    c("embed-batch-size-zero", "embed", "--run", "ref", "--batch-size", "0", code=1, expect="--batch-size"),
    c("embed-max-seq-length-one", "embed", "--run", "ref", "--max-seq-length", "1", code=1, expect="--max-seq-length"),
    c("embed-where-volatile", "embed", "--run", "ref", "--where", "random() < 0.5", code=2, expect="--where"),
    c("fold-feature-set-unknown", "fold", "--feature-set", "nope", "--low-dim", "32", code=1, expect="nope"),
    c("fold-low-dim-zero", "fold", "--feature-set", "FS", "--low-dim", "0", code=2, expect="--low-dim"),
    c("fold-low-dim-not-dividing", "fold", "--feature-set", "FS", "--low-dim", "48", code=1, expect="48"),
    c("fold-low-dim-full", "fold", "--feature-set", "FS", "--low-dim", "64", code=1, expect="64"),
    # -- ingest, tasks, sql, init, global flags ------------------------------------------------------------------------
    c("ingest-limit-negative", "ingest", "{d}/good.jsonl", "--pool", "bad", "--limit", "-1", code=1,
      expect="--limit"),
    c("ingest-limit-word", "ingest", "{d}/good.jsonl", "--pool", "bad", "--limit", "all", code=2, expect="--limit"),
    c("ingest-builtin-unknown", "ingest", "--builtin", "wikipedia", code=2, expect="--builtin"),
    c("ingest-builtin-and-file", "ingest", "{d}/good.jsonl", "--builtin", "sharegpt", code=2, expect="--builtin"),
    c("ingest-no-input", "ingest", "--pool", "bad", code=2, expect="no input files"),
    c("ingest-pool-empty", "ingest", "{d}/good.jsonl", "--pool", "", code=2, expect="--pool"),
    c("task-add-no-file", "task", "add", "t-x", code=1, expect="--file"),
    c("task-add-file-is-dir", "task", "add", "t-x", "--file", "{d}/adir", code=2, expect="adir"),
    c("task-add-name-slash", "task", "add", "a/b", "--file", "{d}/good-task.jsonl", code=1, expect="task name"),
    c("task-add-name-empty", "task", "add", "", "--file", "{d}/good-task.jsonl", code=1, expect="needs a name"),
    c("task-show-unknown", "task", "show", "nope", code=1, expect="nope"),
    c("sql-pragma", "sql", "PRAGMA enable_external_access", code=1, expect="SQL error"),
    c("sql-getenv", "sql", "SELECT getenv('HOME')", code=1, expect="SQL error"),
    c("sql-read-parquet", "sql", "SELECT * FROM read_parquet('{d}/x.parquet')", code=1, expect="SQL error"),
    c("sql-glob", "sql", "SELECT * FROM glob('/etc/*')", code=1, expect="SQL error"),
    c("sql-secrets", "sql", "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", code=1, expect="SQL error"),
    c("sql-detach", "sql", "DETACH lessdb", code=1, expect="SQL error"),
    c("sql-install-from", "sql", "INSTALL httpfs FROM 'http://127.0.0.1:1/'", code=1, expect="SQL error"),
    c("sql-set-memory", "sql", "SET memory_limit = '1TB'", code=1, expect="SQL error"),
    c("sql-limit-huge", "sql", "SELECT 1", "--limit", HUGE, code=2, expect="--limit"),
    c("init-tables-bad-scheme", "init", "-w", "{d}/new-ws", "--tables", "ftp://host/x", code=1,
      expect="--tables"),
    c("init-storage-option-malformed", "init", "-w", "{d}/new-ws2", "--tables", "s3://b/p", "--storage-option",
      "novalue", code=1, expect="--storage-option"),
    c("init-on-a-file", "init", "-w", "{d}/afile.txt", code=1, expect="afile.txt"),
    c("workspace-missing", "pools", "-w", "{d}/no-such-workspace", code=1, expect="no-such-workspace"),
    c("unknown-command", "selct", "--task", "toy", code=2, expect="selct"),
    c("unknown-flag", "select", "--task", "toy", "--cuont", "3", code=2, expect="--cuont"),
    c("flag-without-value", "select", "--task", "toy", "--count", code=2, expect="--count"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Pools p1 (24) and p2 (8), a 2-epoch warmup run `ref` on p1 with its features, tasks toy and toy2, a LESS
    selection `sel` and a random one `rsel`; a scratch folder {d}."""
    root = tmp_path_factory.mktemp("hostile")
    d = root / "in"
    d.mkdir()
    ws = Workspace.init(root / "ws")
    for pool, n in (("p1", 24), ("p2", 8)):
        write_jsonl(d / f"{pool}.jsonl", [msgs(f"{pool} question {i} " + "word " * (i % 7), f"answer {i}")
                                           for i in range(n)])
        ingest_files(ws, [d / f"{pool}.jsonl"], pool=pool, progress=False)
    run_warmup(ws, build_warmup_config("p1", run_id="ref", model="tiny", percentage=0.5, lora_r=4, lora_alpha=16,
                                       max_seq_length=64, epochs=2, batch_size=4, micro_batch_size=4,
                                       device="cpu"), progress=False)
    fs = featurize_run(ws, FeaturizeConfig(run_id="ref", dim=64, dtype="float32", batch_size=8, device="cpu",
                                           progress=False)).feature_set_id
    write_jsonl(d / "good-task.jsonl", [{"subtask": "a", "prompt": "q", "completion": "a"},
                                        {"subtask": "b", "prompt": "question 3", "completion": "answer 3"}])
    add_tasks(ws, name="toy", file=d / "good-task.jsonl")
    add_tasks(ws, name="toy2", file=d / "good-task.jsonl")
    select(ws, SelectConfig(task="toy", pool="p1", run="ref", count=3, name="sel", progress=False))
    select(ws, SelectConfig(task="toy", pool="p1", method="random", count=3, name="rsel", progress=False))
    write_jsonl(d / "good.jsonl", [msgs("good", "fine")])
    (d / "adir").mkdir()
    (d / "afile.txt").write_text("a regular file\n")
    (d / "exists.jsonl").write_text("keep me\n")
    return {"ws": ws, "root": ws.root, "d": d, "fs": fs}


def _args(env, case: Case) -> tuple:
    return tuple(a.replace("{d}", str(env["d"])) if a != "FS" else env["fs"] for a in case.args)


def full_snapshot(env) -> dict:
    """What a refused command must not change (test_bad_input's snapshot), plus the run folders."""
    out = snapshot(env)
    out["checkpoints"] = sorted(str(p.relative_to(env["root"])) for p in (env["root"] / "checkpoints").rglob("*"))
    return out


@pytest.mark.parametrize("case", CASES, ids=str)
def test_hostile_input_is_refused_cleanly(env, case, monkeypatch):
    monkeypatch.delenv("LESSDB_DEBUG", raising=False)
    monkeypatch.setenv("LESSDB_PROGRESS", "0")
    before = full_snapshot(env)
    code, out, err = lessdb(env, *_args(env, case))
    suite_tally.add("hostile inputs tried")
    suite_tally.add(f"hostile inputs: exit {code}")
    assert "Traceback" not in err and "Traceback" not in out
    assert code not in (0, EXIT_INTERNAL), f"exit {code}: {err}{out[-500:]}"
    assert code == case.code, f"exit {code}, expected {case.code}: {err}"
    for text in case.expect:
        assert text.replace("{d}", str(env["d"])) in err, f"{text!r} not in: {err}"
    assert full_snapshot(env) == before, "a refused command changed the workspace or the scratch folder"
    suite_tally.add("hostile inputs refused cleanly")


def test_case_names_are_distinct_and_many():
    from test_bad_input import CASES as FILE_CASES

    assert len({c.name for c in CASES}) == len(CASES)
    assert len(CASES) + len(FILE_CASES) >= 300, len(CASES) + len(FILE_CASES)


def test_cheap_refusals_load_no_model(env, monkeypatch):
    """k against the pool, missing options and bad filters are refused before any model is loaded."""
    from lessdb.models import loading

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before a cheap check refused the command")
    monkeypatch.setattr(loading, "load_base_model", no_model)
    monkeypatch.setenv("LESSDB_PROGRESS", "0")
    for args in (("select", "--task", "toy", "--pool", "p1", "--run", "ref", "--count", "3000"),
                 ("select", "--task", "toy", "--pool", "p1", "--method", "rds", "--run", "ref", "--count", "3000"),
                 ("featurize", "--dim", "64"),
                 ("featurize", "--run", "ref", "--dim", "64", "--where", "total_chars < 0"),
                 ("warmup", "--pool", "p1", "--model", "tiny", "--lr", "nan"),
                 ("warmup", "--pool", "nope", "--model", "tiny")):
        code, _, err = lessdb(env, *args)
        assert code in (1, 2) and "a model was loaded" not in err, (args, err)
