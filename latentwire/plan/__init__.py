"""The parts of the workflow plan (:class:`latentwire.workflow.WorkflowPlan`).

``sections`` parses the workflow config's sections into the run settings the jobs receive, ``rivals``
schedules the discrete comparators and tuned text ceilings beside every latent (the ``comparators:``
section), ``stages`` names each latent run's Stage A / B / C jobs by their wildcards and ``paths``
holds the path template of every file the plan names. The plan sits above
training and evaluation: it builds their settings dataclasses, and neither imports it.
"""
