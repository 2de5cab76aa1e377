"""Make the README's example pictures (kept.png, retention.png): `python docs/make_example.py` (from the repository root).

Writes a small synthetic video (a slowly panning texture with a 4-frame cut-away, the "event")
to a temporary folder, then runs the command line on it:

    token-compressor visualize --video <tmp>/event.mp4 --features pixels --max-frames 8 -o docs/kept.png
    token-compressor bench --retention -o docs/retention.png
"""
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's package, whatever is installed

from token_compressor import cli  # noqa: E402
from token_compressor.bench.retention import event_video  # noqa: E402
from token_compressor.video import write_video  # noqa: E402

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        video = os.path.join(tmp, "event.mp4")
        write_video(video, event_video(num_frames=16, size=224, event_start=8, event_length=4, seed=1, noise=1.0).frames)
        rc = cli.main(["visualize", "--video", video, "--features", "pixels", "--max-frames", "8",
                       "--ratio", "0.25", "-o", os.path.join(HERE, "kept.png")])
    sys.exit(rc or cli.main(["bench", "--retention", "-o", os.path.join(HERE, "retention.png")]))
