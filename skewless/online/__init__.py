"""The online store: the latest value per entity and view version, in Redis.

Key layout (one Redis string per entity and view version):

    <namespace>:{<entity values joined by |>}:<view>_v<N>

The braces are a Redis Cluster hash tag: one entity's keys for several views share a slot, so a
feature vector can be read in one round trip even on a cluster. The value is a 32-character
version header (feature_ts and created_at, as fixed-width hex microseconds) followed by the feature
values as a JSON array in the view's column order, which keeps ints, floats, strings, booleans and
NULLs apart. The header lets a Lua script compare versions without decoding: newest wins.
"""
