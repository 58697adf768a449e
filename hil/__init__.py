"""hil — hardware in the loop: the simulator's controller object driving a real cluster over SSH.

The coordinator (asyncio + asyncssh; imports no torch) connects to every node with host-key verification
(:mod:`hil.connect`), checks and deploys the software and the model (:mod:`hil.deploy`), starts one stage
worker per node and chains them (:mod:`hil.session`, :mod:`hil.remote`), feeds requests on the scenario's
arrival times and runs the policy every period on the workers' reports (:mod:`hil.coordinator`), applies
environment slowdowns for real (:mod:`hil.environment`), writes results in the simulator's schema
(:mod:`hil.records`) and compares them with the simulator's prediction (:mod:`hil.compare`).  Only the
stage worker (:mod:`hil.worker`, run on the nodes as ``python -m hil.worker``) imports torch.

Command line: ``edgeprune-hil`` (:mod:`hil.cli`).  Cluster file schema: :mod:`hil.cluster`.
"""
