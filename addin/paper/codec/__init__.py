"""The paper gateway's TWS API codec at server version 178: framing and field encoding (:mod:`.wire`),
decoders of client requests (:mod:`.requests`), server -> client messages (:mod:`.messages`) and the
order messages, placeOrder in and OPEN_ORDER / COMPLETED_ORDER out (:mod:`.order_codec`). Pure
functions over bytes and fields: no sockets, no market, no state.
"""
