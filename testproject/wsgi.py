import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
application = get_wsgi_application()

# The application's start-up objects live as long as the process: keep them out of the
# cyclic collector's scans, whose pauses otherwise set the p99 of every request
# (docs/performance.md, "p99 and the collector"). With a pre-forking server such as
# gunicorn --preload, the workers also share these pages instead of copying them.
gc.collect()
gc.freeze()
