"""Per-test outcomes of the unpatched and patched junit XMLs of `run.sh`, family by family.

    python tools/hf_tests/diff.py RESULTS

Prints every test whose outcome differs and exits 1 when one passes unpatched and fails, errors
or is missing patched (the verdict the project's contract asks for), else 0."""
import sys
import xml.etree.ElementTree as ET
from collections import Counter

RANK = ["passed", "skipped", "failed", "error"]


def outcomes(path):
    res = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {c.tag for c in case}
        o = "failed" if "failure" in kinds else "error" if "error" in kinds else "skipped" if "skipped" in kinds else "passed"
        if name not in res or RANK.index(o) > RANK.index(res[name]):  # call + teardown error: the worst
            res[name] = o
    return res


def main(results):
    bad = 0
    for fam in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        u, p = outcomes(f"{results}/unpatched-{fam}.xml"), outcomes(f"{results}/patched-{fam}.xml")
        print(f"== {fam}: unpatched {dict(Counter(u.values()))}  patched {dict(Counter(p.values()))}")
        for n in sorted(set(u) | set(p)):
            if u.get(n) != p.get(n):
                print(f"   DIFF {n}: unpatched={u.get(n)} patched={p.get(n)}")
                bad += u.get(n) == "passed" and p.get(n) in ("failed", "error", None)
    print(f"passes unpatched, fails patched: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
