"""PSS per worker: arbiter with ``refork_after`` against gunicorn ``--preload``, one run.

Builds a Django project in a temporary directory (admin, auth, sessions,
messages, the ORM on SQLite, a few hundred views rendering templates and
running queries), then serves it in turn with

* gunicorn ``--preload`` (sync workers),
* arbiter ``preload_app`` without reforking,
* arbiter ``preload_app`` with ``refork_after``,

each with the same number of workers, drives the same closed-loop load
through every view (keep-alive, one connection per client thread, no retry),
waits for the worker set to settle, and reads the proportional set size
(``Pss`` in ``/proc/PID/smaps_rollup``) of each worker. It prints a table:
the mean, min and max PSS per worker, the master's, and the ratio to
gunicorn's mean.

Usage (Linux; Django installed in both interpreters):

    python scripts/refork_pss.py --gunicorn-python /tmp/peers-venv/bin/python \\
        [--workers 8] [--requests 10000] [--refork-after 500] [--views 300]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

SETTINGS = """
SECRET_KEY = "refork-pss-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "proj.urls"
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
    "shop",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [], "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DB_PATH}}
STATIC_URL = "/static/"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
"""

MODELS = """
from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=100)


class Product(models.Model):
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    category = models.ForeignKey(Category, on_delete=models.CASCADE)
    created = models.DateTimeField(auto_now_add=True)
"""

ADMIN = """
from django.contrib import admin

from shop.models import Category, Product

admin.site.register(Category)
admin.site.register(Product, list_display=("name", "price", "category"))
"""

VIEW = '''

def view_{i}(request):
    products = list(Product.objects.filter(category_id={cat}).select_related("category")[:5])
    return HttpResponse(Template(
        "<h1>view {i}</h1>{{% for p in products %}}<p>{{{{ p.name|title }}}} "
        "{{{{ p.price|floatformat:2 }}}} {{{{ p.category.name }}}} {{{{ now|date:'Y-m-d' }}}}"
        "</p>{{% endfor %}}{{{{ extra_{i}|default:'-' }}}}"
    ).render(Context({{"products": products, "now": timezone.now()}})))
'''


def build_project(base: Path, views: int) -> None:
    """The Django project under ``base``: settings, models, admin, ``views`` views, a DB."""
    (base / "proj").mkdir()
    (base / "shop").mkdir()
    (base / "proj" / "__init__.py").write_text("")
    (base / "proj" / "settings.py").write_text(
        f"DB_PATH = {str(base / 'db.sqlite3')!r}\n" + SETTINGS)
    (base / "proj" / "wsgi.py").write_text(textwrap.dedent("""
        import os
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
        from django.core.wsgi import get_wsgi_application
        application = get_wsgi_application()
    """))
    (base / "shop" / "__init__.py").write_text("")
    (base / "shop" / "models.py").write_text(MODELS)
    (base / "shop" / "admin.py").write_text(ADMIN)
    (base / "shop" / "views.py").write_text(
        "from django.http import HttpResponse\nfrom django.template import Context, Template\n"
        "from django.utils import timezone\n\nfrom shop.models import Product\n"
        + "".join(VIEW.format(i=i, cat=i % 10 + 1) for i in range(views)))
    (base / "proj" / "urls.py").write_text(
        "from django.contrib import admin\nfrom django.urls import path\n\nfrom shop import "
        "views\n\nurlpatterns = [path('admin/', admin.site.urls)] + [\n"
        + "".join(f"    path('v/{i}/', views.view_{i}),\n" for i in range(views)) + "]\n")
    setup = textwrap.dedent("""
        import os, django
        os.environ["DJANGO_SETTINGS_MODULE"] = "proj.settings"
        django.setup()
        from django.core.management import call_command
        call_command("makemigrations", "shop", verbosity=0)
        call_command("migrate", verbosity=0)
        from shop.models import Category, Product
        cats = [Category.objects.create(name=f"category {i}") for i in range(10)]
        Product.objects.bulk_create(Product(name=f"product {i}", price=i + 0.5,
                                            category=cats[i % 10]) for i in range(500))
    """)
    subprocess.run([sys.executable, "-c", setup], cwd=base, check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/v/0/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing serves on port {port}")


def drive(port: int, requests: int, views: int, clients: int) -> tuple[int, int]:
    """``requests`` GETs through every view (and the admin login) from ``clients``
    kept-alive connections; (answered 200, failed)."""
    lock = threading.Lock()
    next_index = [0]
    counts = [0, 0]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                index = next_index[0]
                next_index[0] += 1
            if index >= requests:
                break
            path = "/admin/login/" if index % 25 == 0 else f"/v/{index % views}/"
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
            with lock:
                counts[0 if ok else 1] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts[0], counts[1]


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise ValueError(f"no Pss for pid {pid}")


def settled_workers(master: int, count: int, timeout: float = 60.0) -> list[int]:
    """The master's ``count`` children once the set has not changed for 3 s."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        pids = sorted(children(master))
        if pids != last:
            last, since = pids, time.monotonic()
        elif len(pids) == count and time.monotonic() - since >= 3.0:
            return pids
        time.sleep(0.2)
    raise SystemExit(f"the workers did not settle at {count}: {last}")


def run_server(name: str, argv: list[str], cwd: Path, port: int, args: argparse.Namespace,
               env: dict[str, str]) -> dict:
    log = open(cwd / f"{name}.log", "wb")
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=log,
                            start_new_session=True)
    try:
        wait_serving(port, proc)
        ok, failed = drive(port, args.requests, args.views, args.clients)
        pids = settled_workers(proc.pid, args.workers)
        sizes = [pss_kib(pid) for pid in pids]
        return {"name": name, "ok": ok, "failed": failed, "sizes": sizes,
                "master": pss_kib(proc.pid)}
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gunicorn-python", default="/tmp/peers-venv/bin/python",
                        help="a Python with gunicorn and Django installed")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--views", type=int, default=300)
    parser.add_argument("--refork-after", default="500",
                        help="arbiter's refork_after, comma-separated (default 500)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if not Path("/proc/self/smaps_rollup").exists():
        raise SystemExit("needs Linux (/proc/PID/smaps_rollup)")
    base = Path(tempfile.mkdtemp(prefix="refork-pss-"))
    try:
        build_project(base, args.views)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "proj.settings", "PYTHONPATH": str(base)}
        env = {k: v for k, v in env.items() if not k.startswith("ARBITER_")}
        arbiter = [sys.executable, "-m", "arbiter"]
        steps = "[" + args.refork_after + "]"
        results = []
        port = free_port()
        results.append(run_server("gunicorn --preload", [
            args.gunicorn_python, "-m", "gunicorn", "--preload", "-w", str(args.workers),
            "-b", f"127.0.0.1:{port}", "--log-level", "warning", "proj.wsgi:application"],
            base, port, args, env))
        for name, refork in (("arbiter preload", "[]"),
                             (f"arbiter preload refork_after {steps}", steps)):
            port = free_port()
            config = base / "server.yaml"
            config.write_text(textwrap.dedent(f"""
                app: proj.wsgi:application
                bind: ["127.0.0.1:{port}"]
                workers: {args.workers}
                worker_type: preforked
                preload_app: true
                refork_after: {refork}
                log:
                  level: info
            """))
            results.append(run_server(name, [*arbiter, "-c", str(config)], base, port, args,
                                      env))
        print(f"{args.workers} workers, {args.requests} requests over {args.views} Django "
              f"views + admin login, {args.clients} keep-alive clients; PSS from "
              f"/proc/PID/smaps_rollup, MiB")
        reference = sum(results[0]["sizes"]) / len(results[0]["sizes"])
        print(f"{'server':<44} {'ok':>6} {'fail':>5} {'mean':>7} {'min':>7} {'max':>7} "
              f"{'master':>7} {'vs gunicorn':>11}")
        for r in results:
            sizes = r["sizes"]
            mean = sum(sizes) / len(sizes)
            print(f"{r['name']:<44} {r['ok']:>6} {r['failed']:>5} {mean / 1024:>7.1f} "
                  f"{min(sizes) / 1024:>7.1f} {max(sizes) / 1024:>7.1f} "
                  f"{r['master'] / 1024:>7.1f} {mean / reference:>10.0%}")
        return 0
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
