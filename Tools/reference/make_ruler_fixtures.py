#!/usr/bin/env python3
"""Golden fixtures for `eval ruler`, made by NVIDIA RULER's own generator and scoring code.

Writes Tests/LlamaTests/Fixtures/ruler/:
  <task>_<length>_<base|chatml>.jsonl  the jsonl a RULER task script writes (every field, unchanged) for
                                       niah_single_1..3, niah_multikey_1..3, niah_multivalue, niah_multiquery, vt, cwe,
                                       fwe: each at a short length (2 samples; 1024, or 3072 / 2048 where RULER
                                       cannot fit its smallest haystack in 1024 tokens: see SHORT) and at 4096 (8192
                                       for cwe; 1 sample) with the 'base' model template, and niah_single_1,
                                       niah_multikey_2, vt, cwe, fwe at the short length (1 sample) with ChatML;
  cases.json                           one entry per file: task, max_seq_length, template, model_template,
                                       num_samples, seed, tokens_to_generate, file (plus the task's synthetic.yaml
                                       args, the exact --template argument and the RULER commit);
  scoring.json                         hand-made predictions with RULER's postprocess_pred, string_match_all and
                                       string_match_part results, per sample and per batch.

RULER is read from the git mirror /work/.mirror/NVIDIA+RULER/repo (commit RULER_COMMIT below): its scripts/ folder is
exported to a temporary directory with `git archive`, and the task scripts run there, unchanged, in a subprocess.
Only these three things differ from a RULER checkout with its data downloaded:

  a. scripts/data/synthetic/json/PaulGrahamEssays.json is not in the repository (json/download_paulgraham_essay.py
     downloads it). It is written as {"text": ESSAY}, ESSAY being the value of the Swift string literal
     RulerEssay.text in Sources/Evaluation/RulerEssay.swift (The Devil's Dictionary, the haystack LongTune ships):
     the lines between `    static let text = #\"""` and the closing `\"""#`, joined by newlines, without the newline
     before `\"""#` (Swift drops it; the closing delimiter has no indentation, so none is stripped). It is read by
     niah.py:84-87 (and variable_tracking.py:81-84, essay haystack only, which `vt` does not use).
  b. scripts/data/synthetic/json/english_words.json is a git-LFS pointer in the mirror. It is written as `{}`.
     common_words_extraction.py:81-83 loads it and :88-89 samples from it only when more words are asked for than
     wonderwords' lists hold (8166 words); the script asserts, from the generator's log, that no cwe run asks for more.
  c. nltk's Punkt model cannot be downloaded offline. A stub package nltk/ (nltk/__init__.py, nltk/tokenize.py) is put
     first on the generators' PYTHONPATH; its sent_tokenize (STUB_TOKENIZE below) is LongTune's documented splitter,
     which the Swift port implements too: on text.split(" "), a sentence ends after a word w when a next word exists,
     w.rstrip("\"')]_") is non-empty and ends in . ! or ?, and the next word's lstrip("\"'([_") starts with A-Z or
     0-9; sentences are the " ".join of their words (the stub asserts " ".join(sentences) == text). RULER imports it
     at niah.py:42 and variable_tracking.py:44 and calls it at niah.py:155 (essay haystacks). nltk itself is not
     installed.

Each task script is called the way scripts/data/prepare.py calls it (prepare.py:88 model template, :96-101
template = model_template.format(task_template=...) + answer_prefix, :104-108 num_samples and
seed = random_seed + chunk_idx with chunk_idx 0, :122-137 the command line with synthetic.yaml's args as
`--key value`), with the arguments as an argv list instead of prepare.py's `shell=True` string: the script asserts
that the --template string holds none of the characters a shell would change inside double quotes ($ ` \\ "), so
the script receives the same strings. prepare.py itself is not run (it needs nltk, the yaml of a model and a
--model_template_type from template.py; the ChatML template below is not one of template.py's).

The tokenizer is `--tokenizer_type hf --tokenizer_path Tests/DatasetsTests/Fixtures/sft/smollm2` (tokenizer.py:74-84,
AutoTokenizer(...).tokenize): the small byte-level test BPE (600 tokens, 343 merges) with ChatML's special tokens,
which the Swift tests can load (SmolLM2's own tokenizer.json, 1.5 MB, is only under the git-ignored models/). It
spends about three tokens on an English word, so some tasks' smallest haystacks do not fit in 1024 tokens (SHORT).

Scoring: postprocess_pred is taken from scripts/eval/evaluate.py:50-58 with `ast` and exec'd with only `re` (the
module imports nltk, pandas and NeMo at :29-41 and parses argv at :47); string_match_all and string_match_part are
imported from scripts/eval/synthetic/constants.py:24-30 (no imports).

Setup (outside the repository; only PyPI is needed; tenacity is imported by scripts/data/tokenizer.py:18):
    python3 -m venv /tmp/rulerenv
    /tmp/rulerenv/bin/pip install transformers tokenizers numpy scipy wonderwords==3.0.1 tqdm pyyaml tenacity
Run from anywhere:
    /tmp/rulerenv/bin/python Tools/reference/make_ruler_fixtures.py [--ruler /work/.mirror/NVIDIA+RULER/repo]
The generators' stderr goes to /tmp/ruler_fixture_logs/<case>.log.
"""
import argparse, ast, glob, importlib.util, json, os, re, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "Tests/LlamaTests/Fixtures/ruler")
TOKENIZER = os.path.join(ROOT, "Tests/DatasetsTests/Fixtures/sft/smollm2")
ESSAY_SWIFT = os.path.join(ROOT, "Sources/Evaluation/RulerEssay.swift")
LOGS = "/tmp/ruler_fixture_logs"
RULER_COMMIT = "c3f5e3b4f87f97e048793bb510a3a6b19a46bf3a"

TASKS = ["niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
         "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe"]
CHATML_TASKS = ["niah_single_1", "niah_multikey_2", "vt", "cwe", "fwe"]
MODEL_TEMPLATES = {"base": "{task_template}",   # template.py:16
                   "chatml": "<|im_start|>user\n{task_template}<|im_end|>\n<|im_start|>assistant\n"}
RANDOM_SEED, CHUNK_IDX = 42, 0                  # prepare.py:58, :61 defaults

STUB_TOKENIZE = '''"""LongTune's sentence splitter, standing in for nltk's sent_tokenize (Punkt is not offline)."""


def sent_tokenize(text, language="english"):
    words = text.split(" ")
    sentences, current = [], []
    for i, word in enumerate(words):
        current.append(word)
        if i + 1 < len(words):
            core = word.rstrip("\\"')]_")
            nxt = words[i + 1].lstrip("\\"'([_")
            if core and core[-1] in ".!?" and nxt and ("A" <= nxt[0] <= "Z" or "0" <= nxt[0] <= "9"):
                sentences.append(" ".join(current))
                current = []
    sentences.append(" ".join(current))
    assert " ".join(sentences) == text
    return sentences
'''


# The short case is 1024 tokens where RULER can make it with this small-vocabulary tokenizer (about 3 tokens a word).
# Where it cannot, RULER's sample loop retries forever (it never goes below its smallest haystack), so:
#   essay-haystack niah: niah.py:214-215 steps by 500 words and :264-273 never goes below 500, which take about 1950
#                        tokens (2064 with four needles at 2048): 3072;
#   cwe:                 common_words_extraction.py:147 starts at 10 words and :175-184 never goes below them, about
#                        1300 tokens with the one-shot example of :102-106: 2048 (still the < 4096 branch), and about
#                        5100 tokens with the >= 4096 branch's example and repeats (:107-111): 8192 for the long case;
#   vt:                  variable_tracking.py:207-208 steps by 5 noise lines and :257-273 never goes below 5, which with
#                        the in-context example of :216-219 take about 1040 tokens (1024 only works when a retry's
#                        random draw happens to be shorter, and never with ChatML): 2048 (still the < 4096 branch).
SHORT = {"niah_single_2": 3072, "niah_single_3": 3072, "niah_multikey_1": 3072, "niah_multivalue": 3072,
         "niah_multiquery": 3072, "cwe": 2048, "vt": 2048}
LONG = {"cwe": 8192}


def short(task):
    return SHORT.get(task, 1024)


def long(task):
    return LONG.get(task, 4096)


def cases():
    """(task, max_seq_length, template name, num_samples) in file order."""
    return ([(t, short(t), "base", 2) for t in TASKS] + [(t, long(t), "base", 1) for t in TASKS]
            + [(t, short(t), "chatml", 1) for t in CHATML_TASKS])


def essay_text():
    """The value of the Swift literal RulerEssay.text (substitution a)."""
    source = open(ESSAY_SWIFT, encoding="utf-8").read()
    opening, closing = '    static let text = #"""\n', '\n"""#'
    start = source.index(opening) + len(opening)
    end = source.index(closing, start)
    assert source.count(closing) == 1 and "\\#" not in source[start:end] and "\r" not in source
    return source[start:end]


def export_ruler(ruler, work):
    """git archive the scripts/ folder and apply substitutions a, b and c; returns (scripts dir, stub dir)."""
    subprocess.run(f"git -C {ruler} archive {RULER_COMMIT} scripts | tar -x -C {work}", shell=True, check=True)
    scripts = os.path.join(work, "scripts")
    json_dir = os.path.join(scripts, "data/synthetic/json")
    assert not os.path.exists(os.path.join(json_dir, "PaulGrahamEssays.json"))
    with open(os.path.join(json_dir, "PaulGrahamEssays.json"), "w") as f:
        json.dump({"text": essay_text()}, f)
    words = os.path.join(json_dir, "english_words.json")
    assert open(words).read().startswith("version https://git-lfs.github.com/spec/v1")
    with open(words, "w") as f:
        f.write("{}")
    stub = os.path.join(work, "stub")
    os.makedirs(os.path.join(stub, "nltk"))
    open(os.path.join(stub, "nltk/__init__.py"), "w").close()
    with open(os.path.join(stub, "nltk/tokenize.py"), "w") as f:
        f.write(STUB_TOKENIZE)
    return scripts, stub


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def command(scripts, task, length, template_name, num_samples, save_dir):
    """The argv prepare.py:122-137 builds for one task (chunk 0 of 1, no --remove_newline_tab)."""
    import yaml
    config = yaml.safe_load(open(os.path.join(scripts, "synthetic.yaml")))[task]
    base = load_module(os.path.join(scripts, "data/synthetic/constants.py"), "ruler_data_constants").TASKS
    config.update(base[config["task"]])
    template = MODEL_TEMPLATES[template_name].format(task_template=config["template"]) + config.get("answer_prefix", "")
    assert not any(c in template for c in '$`\\"'), "the shell would change this --template"
    argv = [sys.executable, os.path.join(scripts, "data/synthetic", f"{config['task']}.py"),
            "--save_dir", save_dir, "--save_name", task, "--subset", "validation",
            "--tokenizer_path", TOKENIZER, "--tokenizer_type", "hf", "--max_seq_length", str(length),
            "--tokens_to_generate", str(config["tokens_to_generate"]), "--num_samples", str(num_samples),
            "--random_seed", str(RANDOM_SEED + CHUNK_IDX)]
    for key, value in config["args"].items():
        argv += [f"--{key}", f"{value}"]
    return argv + ["--template", template], config, template


def run_generator(argv, stub, log_path):
    env = dict(os.environ, PYTHONPATH=stub, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    start = time.time()
    with open(log_path, "w") as log:
        try:   # RULER's sample loops retry forever when the smallest haystack does not fit (see ESSAY_TASKS)
            subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=300,
                           cwd=os.path.dirname(argv[1]))
        except subprocess.TimeoutExpired:
            sys.exit(f"{argv[1]} ran for 5 minutes: its smallest haystack does not fit? see {log_path}")
    return time.time() - start


def search_trace(log_path):
    """The haystack sizes the binary search tried and chose, from RULER's own log lines."""
    text = open(log_path).read()
    tried = [int(n) for n in re.findall(r"Testing haystack size: (\d+)", text)]
    chosen = [int(n) for n in re.findall(r"Final optimal haystack size \(number of haystack\): (\d+)", text)]
    return tried, chosen


def wonderwords_total():
    """len(words) of common_words_extraction.py:72-76; get_example samples english_words.json beyond it (:88-89)."""
    from wonderwords.random_word import _get_words_from_text_file as words
    return len(set(words("nounlist.txt") + words("adjectivelist.txt") + words("verblist.txt")))


def check_lengths(rows, tokens_to_generate):
    """RULER's length = tokens(input + answer_prefix) + tokens_to_generate, recomputed with `tokenizers`."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(TOKENIZER, "tokenizer.json"))
    for row in rows:
        n = len(tok.encode(row["input"] + row["answer_prefix"], add_special_tokens=False).ids)
        assert row["length"] == n + tokens_to_generate, (row["length"], n, tokens_to_generate)


def generate(scripts, stub, work):
    entries, report = [], []
    for task, length, template_name, num_samples in cases():
        name = f"{task}_{length}_{template_name}"
        save_dir = os.path.join(work, "out", name)
        argv, config, template = command(scripts, task, length, template_name, num_samples, save_dir)
        log_path = os.path.join(LOGS, name + ".log")
        seconds = run_generator(argv, stub, log_path)
        data = open(os.path.join(save_dir, task, "validation.jsonl"), "rb").read()
        rows = [json.loads(line) for line in data.decode().splitlines()]
        assert len(rows) == num_samples
        check_lengths(rows, config["tokens_to_generate"])
        tried, chosen = search_trace(log_path)
        if task == "cwe":   # substitution b: english_words.json is never sampled from
            assert max(tried + [4096]) <= wonderwords_total(), tried
        with open(os.path.join(OUT, name + ".jsonl"), "wb") as f:
            f.write(data)
        entries.append({"task": task, "max_seq_length": length, "template": template_name,
                        "model_template": MODEL_TEMPLATES[template_name], "num_samples": num_samples,
                        "seed": RANDOM_SEED + CHUNK_IDX, "tokens_to_generate": config["tokens_to_generate"],
                        "file": name + ".jsonl", "args": config["args"], "template_arg": template,
                        "ruler_commit": RULER_COMMIT})
        report.append((name, seconds, rows, tried, chosen))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(entries, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return report


# ---- scoring ----

def ruler_scoring(scripts):
    """postprocess_pred (evaluate.py:50-58, extracted with ast) and the two metrics (eval/synthetic/constants.py)."""
    source = open(os.path.join(scripts, "eval/evaluate.py")).read()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "postprocess_pred")
    namespace = {"re": re}
    exec(compile(ast.Module(body=[node], type_ignores=[]), "evaluate.py", "exec"), namespace)
    metrics = load_module(os.path.join(scripts, "eval/synthetic/constants.py"), "ruler_eval_constants")
    return namespace["postprocess_pred"], metrics.string_match_all, metrics.string_match_part


# (raw model output, references): odd whitespace, control characters, case, partial and empty answers, unicode.
SAMPLES = [
    ("  1234567.\n", ["1234567"]),
    ("The special magic number is 7654321", ["1234567"]),
    ("", ["1234567"]),
    (" \t\n\r ", ["1234567"]),
    ("\x00\x01answer: 42\x1b[0m\x7f", ["42"]),
    ("4\x002", ["42"]),
    ("\n\n 1. apple 2. Banana 3. CHERRY\n", ["apple", "banana", "cherry"]),
    ("apple, banana", ["apple", "banana", "cherry", "durian"]),
    ("2421345, 9981234 and 1110000", ["2421345", "9981234", "1110000", "5555555"]),
    ("only 5555555", ["2421345", "9981234", "1110000", "5555555"]),
    ("a3f1c2d4-1b2c-4d3e-8f9a-0b1c2d3e4f5a", ["A3F1C2D4-1B2C-4D3E-8F9A-0B1C2D3E4F5A"]),
    ("VAR ABCDE, VAR FGHIJ, KLMNO", ["ABCDE", "FGHIJ", "KLMNO", "PQRST", "UVWXY"]),
    ("abcde", ["ABCDE", "FGHIJ", "KLMNO", "PQRST", "UVWXY", "ZZZZZ", "YYYYY", "XXXXX"]),
    ("xqzvbn ... wplkjh", ["xqzvbn", "wplkjh", "mnbvcx"]),
    ("\u3000\u00a0 wise-owl \u2028\x85", ["wise-owl"]),
    ("\x1c\x1d\x1e\x1f mid\x1fdle \x1c", ["mid\ndle", "middle"]),
    ("\u200bzero-width\u200b", ["zero-width"]),
    ("CAFÉ ÜBER STRASSE", ["café", "über", "straße"]),
    ("caf\u00e9", ["cafe\u0301"]),
    ("cafe\u0301", ["e", "caf\u00e9"]),
    ("ΟΔΥΣΣΕΥΣ", ["οδυσσευς"]),
    ("İstanbul", ["istanbul", "i\u0307stanbul"]),
    ("数字是 123 和 456。", ["123", "456", "789"]),
    ("emoji 👍🏽 ok", ["👍", "👍🏽"]),
    ("anything", [""]),
]

# Batches (indices into SAMPLES) for the aggregate scores; [0, 12, 2, 2] gives 100 * (1 + 1/8) / 4 = 28.125 and
# [12, 2, 2, 2] gives 3.125, which round(_, 2) takes to 28.12 and 3.12 (half to even on the binary value).
BATCHES = [list(range(len(SAMPLES))), [0, 1, 2], [6, 7, 8, 9], [10, 11, 12, 13], [12, 2, 2, 2], [0, 12, 2, 2],
           [7, 12, 9], [17, 18, 19, 20, 21], [14, 15, 16, 22, 23, 24], [8, 9, 11]]


def make_scoring(scripts):
    postprocess_pred, match_all, match_part = ruler_scoring(scripts)
    samples = []
    for raw, refs in SAMPLES:
        pred = postprocess_pred(raw, {})
        samples.append({"raw": raw, "pred": pred, "refs": refs,
                        "string_match_all": match_all([pred], [refs]),
                        "string_match_part": match_part([pred], [refs])})
    batches = []
    for indices in BATCHES:
        preds, refs = [samples[i]["pred"] for i in indices], [samples[i]["refs"] for i in indices]
        batches.append({"samples": indices, "preds": preds, "refs": refs,
                        "string_match_all": match_all(preds, refs), "string_match_part": match_part(preds, refs)})
    scoring = {"ruler_commit": RULER_COMMIT,
               "about": "pred = postprocess_pred(raw) (scripts/eval/evaluate.py); scores are string_match_all / "
                        "string_match_part (scripts/eval/synthetic/constants.py) of [pred] and [refs] per sample, "
                        "and of the listed samples' preds and refs per batch",
               "samples": samples, "batches": batches}
    with open(os.path.join(OUT, "scoring.json"), "w") as f:
        json.dump(scoring, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return scoring


def print_report(report, scoring):
    print("\nfile                               seconds samples  length         binary search (tried -> chosen)")
    for name, seconds, rows, tried, chosen in report:
        print(f"{name + '.jsonl':34} {seconds:7.1f} {len(rows):7}  {str([r['length'] for r in rows]):14} "
              f"{tried} -> {chosen}")
    first = next(rows for name, _, rows, _, _ in report if name.startswith("niah_single_2_") and name.endswith("_base"))
    print("\nniah_single_2 (short case), first 300 characters of input:\n" + repr(first[0]["input"][:300]))
    total = 0
    print("\nfiles:")
    for path in sorted(glob.glob(os.path.join(OUT, "*"))):
        size = os.path.getsize(path)
        total += size
        print(f"  {os.path.relpath(path, ROOT):62} {size:8}")
    print(f"  total {total} bytes; {len(scoring['samples'])} scoring samples, {len(scoring['batches'])} batches")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ruler", default="/work/.mirror/NVIDIA+RULER/repo", help="git directory of NVIDIA/RULER")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(LOGS, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        scripts, stub = export_ruler(args.ruler, work)
        scoring = make_scoring(scripts)
        report = generate(scripts, stub, work)
    print_report(report, scoring)


if __name__ == "__main__":
    main()
