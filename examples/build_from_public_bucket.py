"""Build a cube straight from the public TESS bucket, anonymously, into S3 or a file.

    python examples/build_from_public_bucket.py                       # sector 1, camera 1, CCD 1
    python examples/build_from_public_bucket.py s3://my-bucket/cubes/tess-s0001-1-1-cube.fits

Only the byte ranges of the image rows are fetched (about 45 GB for a prime-mission
sector/camera/CCD, each byte once); with an s3:// output the cube is streamed as a
multipart upload, never stored locally. Run it where S3 is close (EC2 in us-east-1).
The same from the shell:

    fficube build 's3://stpubdata/tess/public/ffi/s0001/*/*/1-1/*.fits' --anon \\
        --sector 1 --max-memory 4GB -o tess-s0001-1-1-cube.fits
"""

import sys

import fficube

SOURCE = "s3://stpubdata/tess/public/ffi/s0001/*/*/1-1/*.fits"


def main() -> None:
    output = sys.argv[1] if len(sys.argv) > 1 else "tess-s0001-1-1-cube.fits"

    def show(p: fficube.Progress) -> None:
        if p.stage == "write":
            print(f"\rblock {p.done}/{p.total}, {p.bytes_read / 1e9:.1f} GB fetched", end="", flush=True)

    result = fficube.make_cube(
        SOURCE, output, sector=1, max_memory="4GB", anon=True,
        # Writing to your own bucket needs credentials; reading stpubdata needs none.
        # With anon=True for the input, give the output's credentials by profile if needed:
        # storage_options={"profile": "my-profile"},
        progress=show,
    )
    print()
    print(result.summary())


if __name__ == "__main__":
    main()
