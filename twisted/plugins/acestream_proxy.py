from twisted.application.service import ServiceMaker

acestream_proxy = ServiceMaker(
    "acetwist AceStream proxy",
    "acetwist.tap",
    "Share AceStream engine sessions among many players (acexy-compatible /ace/getstream).",
    "acestream-proxy",
)
