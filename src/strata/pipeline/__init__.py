"""The request pipeline: an ordered list of stages (``stages.STAGES``), each in its own module.

A stage is one small object (``stage.Stage``): ``before(flow)`` runs on the way in and may answer or refuse
(the first answer ends the way in), ``after(flow)`` runs on the way out, once, for every stage, in reverse
order, whether the request was served, refused or failed, and whether it was JSON or a stream (a stream's way
out runs when the stream ends). What a request carries through the stages is its ``flow.Flow``; what ends up in
the ledger row is its ``record.CallRecord``; each stage's ``before`` is a span of the request's trace.
"""
