"""Kernel-client VM harness: a real Linux NFSv4.0 client (a Debian kernel in qemu) for e2e tests.

How it works
------------
* ``kernel.py``: ``apt-get download`` the image package behind ``linux-image-amd64``,
  ``dpkg -x`` it, ``depmod -b`` it, extract the uncompressed ``vmlinux`` (booted through the
  PVH entry; ``vmlinuz`` is the fallback). Cached in ``$PYNFSD_VM_CACHE`` or
  ``/var/cache/pynfsd-vm``.
* ``initramfs.py`` + ``cpio.py``: a cached base initramfs keyed by kernel version and a hash of
  its inputs (static busybox with applet links, the NFS/virtio module closure from
  ``modules.dep``, the static helpers compiled from ``helpers/*.c`` with ``gcc -static``,
  ``guest/init.sh`` as ``/init``), plus a per-run gzip'd cpio layer with ``/workload.sh`` and
  ``/config``; the kernel unpacks both.
* ``network.py``: ``UserNet`` (qemu user networking; the guest reaches the host's loopback as
  10.0.2.2 and mounts with ``clientaddr=0.0.0.0``) and ``NetnsNet`` (a namespace made for the
  run, tap0 = 192.168.77.1/24 inside it only, guest 192.168.77.2; server and qemu run under
  ``ip netns exec``; deleted on close, also on failure).
* ``servers.py``: ``Server`` (``start() stop() restart() kill()``, ``export_dir``, ``port``,
  ``pid``, ``log_path``) with ``PynfsdServer`` (``python -m pynfsd serve ...``) and
  ``GaneshaServer`` (NFS-Ganesha, VFS FSAL, v4.0 only, fs recovery backend). Processes are
  ended only by their own PID.
* ``qemu.py``: ``GuestVM.run()`` boots qemu (TCG ``-accel tcg,thread=multi -cpu max -smp 2
  -m 1024``; KVM only where it is real), logs ttyS0 to ``console.log``, enforces a hard timeout
  and always kills qemu by PID. Host action mid-workload: the guest prints ``@@PAUSE <what>``
  and blocks reading ``/dev/ttyS1`` (a unix-socket chardev); the host acts and writes ``go``
  (``restart``: SIGTERM + start; ``crash``: SIGKILL + start). A watchdog stops the VM early
  when the server process dies (a hard NFS mount would otherwise hang to the timeout).
* ``guest/workload.sh``: the workload; one ``@@RESULT <name> PASS|FAIL <why>`` line per step,
  ``@@VALUE <key> <value>`` for what the host verifies on the server's disk. Each step runs in
  its own session with a timeout (``STEP_TIMEOUT``); a stuck step is killed and reported as
  FAIL, and the next step runs. ``ONLY="flock fcntl_locks"`` runs just those steps.
  Steps: mount big_file small_files tree_copy renames symlinks hard_links attributes
  directories large_directory flock fcntl_locks negotiation server_restart server_crash unmount.
* ``helpers/locktest.c``: flock/fcntl tester (try, hold, blocking wait, F_GETLK, byte ranges).
  ``helpers/asuser.c``: run a program as UID:GID with no supplementary groups.
* ``harness.py``: ``run_workload(server, net, workdir, big_mb=...) -> WorkloadRun`` ties it
  together (prepares the export, starts the server, boots, restarts on request, parses);
  ``script=``, ``settings=`` and ``pause=`` run another guest script with its own host actions.
* The caches (``tests/e2e/test_kernel_caches.py``): ``privateetc.py`` (``EtcServer``: ``pynfsd
  serve --exports FILE`` in a private mount namespace where an overlay shows the test's
  ``hosts``, ``netgroup``, ``nsswitch.conf``, ``passwd``, ``group`` over the host's ``/etc``;
  ``admin()`` runs ``pynfsd exportfs|cache ... --state-dir``) and ``guest/caches.sh`` (exports
  by name, wildcard and netgroup, refused ones, ro -> rw by ``exportfs -r``, back by SIGHUP,
  a user's 40th group with and without ``manage-gids``).
* Several guests at once (issue 3 scenarios, ``tests/e2e/test_kernel_scenarios.py``):
  ``multi.py`` (``BridgeNet``: a namespace with a bridge and one tap/address/MAC per guest;
  ``Guest``: a VM running ``guest/scenario_agent.sh``, driven one shell command at a time with
  ``guest.sh(cmd)``, console events awaited with ``wait_line``) and ``scene.py`` (``Scene``:
  bridge + pynfsd + guests + a printed timeline). ``helpers/lockwriter.c`` holds an fcntl lock
  and appends fsync'ed numbered records that the host checks on the server's disk.
* Delegations (``tests/e2e/test_kernel_delegations.py``): the agent's ``ops`` prints the
  mount's per-op RPC counts from ``/proc/self/mountstats``; ``keep_dirty`` turns writeback off
  and ``hold_open`` keeps a file open (``helpers/holdwrite.c`` writes over it and never closes
  or duplicates the descriptor, so the data stays dirty until a recall). ``Scene`` and
  ``PynfsdServer`` take more ``serve`` options (``server_args``, ``extra_args``), ``Scene`` a
  server factory and ``Scene.guest`` an initramfs builder: the ``sec=krb5i`` variant gives
  each guest rpc.gssd, rpc.svcgssd (which accepts the server's RPCSEC_GSS callbacks) and its
  own ``nfs/<guest>`` key (``krb5guest.add_guest_principal``, ``run_layer_krb5``), and runs
  the server with ``nfs-server.test`` as its host name. ``deleg_holder.py`` is a client of the
  project's library, run inside the namespace, that holds a read delegation and ignores its
  recall. ``bench/delegations.py`` (guest ``bench/guest/delegations.sh``) counts the RPCs of
  open/read/close rounds with delegations on, off and against Ganesha.
* Takeover between two nodes (``tests/e2e/test_kernel_takeover.py``): ``failover.py``
  (``FailoverNet``: a ``BridgeNet`` plus one namespace per node, each joined to the bridge by
  a veth with its own address, and the service address 192.168.77.10 on ``float0``, a veth end
  that ``move_floating`` moves, MAC and all, into the other node's namespace) and
  ``takeover.py`` (``TakeoverScene``: nodes A and B serving the same export, their client
  records either in a 3-member etcd cluster run in the bridge namespace, B standing by until
  it begins the grace for A's clients, or in one shared ``--state-dir``, B started after A's
  death; ``take_over`` moves the address to B; ``Contender``: ``contender.py``, a client of
  the project's library in the bridge namespace that reclaims its open on B and polls for a
  conflicting lock, each answer on the timeline).

Running
-------
Install the host tools once: ``scripts/vm-deps.sh`` (as root). Then, from the repo root::

    python -m pytest -m vm tests/e2e -v                         # pynfsd, both network modes
    PYNFSD_E2E_SERVERS=pynfsd,ganesha python -m pytest -m vm tests/e2e
    python -m pytest -m vm tests/e2e -k "pynfsd-user and flock"  # one test (one VM boot)
    python -m pytest -m vm -s tests/e2e/test_kernel_scenarios.py  # issue 3, with timelines
    python -m pytest -m vm -s tests/e2e/test_kernel_takeover.py   # node A to node B
    python -m tests.vm.run --server pynfsd --net netns --big-mb 32 /tmp/vmrun   # by hand
    python -m tests.vm.run --server ganesha --net user --only "flock renames" /tmp/vmrun2

A run by hand leaves ``console.log``, the server log, ``initrd.img`` and the export in the
work directory. ``PYNFSD_VM_ACCEL=tcg`` forces TCG even where KVM would be usable.
"""
