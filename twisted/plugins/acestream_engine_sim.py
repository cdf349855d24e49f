from twisted.application.service import ServiceMaker

acestream_engine_sim = ServiceMaker(
    "acetwist AceStream engine simulator",
    "acetwist.sim.tap",
    "An AceStream engine look-alike: HTTP API, session rules, MPEG-TS and failure injection.",
    "acestream-engine-sim",
)
