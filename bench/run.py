"""`make bench`: every benchmark, one after the other."""

from bench import (
    bandwidth,
    datapath,
    docker_run,
    dsr,
    flows,
    kafka,
    l7,
    lb,
    maglev,
    overlay,
    plumbing,
    policy,
    scale,
)

if __name__ == "__main__":
    plumbing.main()
    docker_run.main()
    datapath.main()
    policy.main()
    overlay.main()
    l7.main()
    kafka.main()
    bandwidth.main()
    flows.main()
    lb.main()
    maglev.main()
    dsr.main()
    scale.main()
