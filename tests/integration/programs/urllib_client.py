"""A urllib.request client for the invisibility tests.

    python3 urllib_client.py BASE_URL OUT_DIR NAME...

Fetches BASE_URL/NAME for each NAME, saves each body to OUT_DIR/NAME and prints one line
"NAME STATUS LENGTH SHA256" (or "NAME STATUS" for an HTTP error); then the directory listing's
hash and a POST (which http.server answers 501). Exits 0 if nothing but HTTP errors happened.
"""
import hashlib
import os
import sys
import urllib.error
import urllib.request


def fetch(url):
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.status, response.read()


def main():
    base, out_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    for name in names:
        try:
            status, body = fetch(f"{base}/{name}")
        except urllib.error.HTTPError as error:
            print(name, error.code)
            continue
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(body)
        print(name, status, len(body), hashlib.sha256(body).hexdigest())
    status, listing = fetch(base + "/")
    print("listing", status, len(listing), hashlib.sha256(listing).hexdigest())
    try:
        urllib.request.urlopen(urllib.request.Request(base + "/", data=b"x=1"), timeout=20)
        print("POST accepted")
    except urllib.error.HTTPError as error:
        print("POST", error.code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
