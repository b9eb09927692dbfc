"""A task module using an option only testmiddleware.Flavour declares: without that
middleware configured, importing it fails (unknown task option)."""

from runtime import task


@task(flavour="vanilla")
def flavoured() -> str:
    return "ok"
