pytest_plugins = [
    "tests.support.database",
    "tests.support.redis",
    "tests.support.model",
    "tests.support.service",
    "tests.support.processes",
    "tests.support.fast_path",
]
