"""Parses Prometheus text (stdin) with prometheus_client's parser and prints
one line per family (`# name type`) and per sample (`name{k="v",...} value`,
labels sorted, values unescaped and shown with repr), so that tests compare
what a scraper reads, not the text. Exit 1 with the parser's error."""
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and others
        print(f"parse error: {e}")
        return 1
    for f in families:
        print(f"# {f.name} {f.type}")
        for s in f.samples:
            labels = ",".join(f"{k}={v!r}" for k, v in sorted(s.labels.items()))
            print(f"{s.name}{{{labels}}} {s.value!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
