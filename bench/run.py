"""`make bench`: every benchmark, one after the other."""

from bench import docker_run, plumbing

if __name__ == "__main__":
    plumbing.main()
    docker_run.main()
