"""The quicker listing parser reads exactly what botocore's own REST-XML parser reads."""

from __future__ import annotations

import botocore.session
import pytest
from botocore.parsers import RestXMLParser

from lepton_core.store.listing import FastListingParser, FastListingParserFactory

NS = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def _shape(operation: str):
    return botocore.session.get_session().get_service_model("s3").operation_model(operation).output_shape


def _listing(ns: str = NS) -> bytes:
    objects = [
        "<Contents><Key>a/x%20y.bin</Key><LastModified>2026-11-29T19:59:11.000Z</LastModified>"
        '<ETag>"b790388ad0b062d0eeafe12f48acfab2"</ETag><Size>1123</Size><StorageClass>STANDARD</StorageClass>'
        "<Owner><ID>abc</ID><DisplayName>lepton</DisplayName></Owner>"
        "<ChecksumAlgorithm>SHA256</ChecksumAlgorithm><ChecksumAlgorithm>CRC32</ChecksumAlgorithm>"
        "<ChecksumType>FULL_OBJECT</ChecksumType>"
        "<RestoreStatus><IsRestoreInProgress>false</IsRestoreInProgress>"
        "<RestoreExpiryDate>2026-12-01T00:00:00Z</RestoreExpiryDate></RestoreStatus></Contents>",
        # an empty object, an element the model does not know, and a key with markup escaped
        "<Contents><Key>a/empty &amp; &lt;odd&gt;</Key><LastModified>2026-11-29T20:00:00Z</LastModified>"
        "<ETag>\"d41d8cd98f00b204e9800998ecf8427e\"</ETag><Size>0</Size><Unknown>1</Unknown><StorageClass></StorageClass></Contents>",
    ]
    return (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult{ns}><Name>bkt</Name><Prefix>a/</Prefix>'
            "<KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>"
            "<ContinuationToken>t1</ContinuationToken><NextContinuationToken>t2</NextContinuationToken>"
            "<EncodingType>url</EncodingType><!-- a comment --><?a-processing instruction?>" + "".join(objects)
            + "<CommonPrefixes><Prefix>a/b/</Prefix></CommonPrefixes><CommonPrefixes><Prefix>a/c/</Prefix></CommonPrefixes>"
            "</ListBucketResult>").encode()


def _response(body: bytes, status: int = 200) -> dict:
    return {"body": body, "status_code": status, "context": {},
            "headers": {"x-amz-request-id": "r1", "x-amz-id-2": "h1", "x-amz-request-charged": "requester"}}


@pytest.mark.parametrize("ns", [NS, ""], ids=["namespaced", "no-namespace"])
@pytest.mark.parametrize("timestamps", [str, None], ids=["as-text", "botocore-dates"])
def test_a_listing_reads_as_botocore_reads_it(ns: str, timestamps) -> None:
    kwargs = {"timestamp_parser": timestamps} if timestamps else {}
    shape = _shape("ListObjectsV2")
    expected = RestXMLParser(**kwargs).parse(_response(_listing(ns)), shape)
    fast = FastListingParser(**kwargs)
    got = fast.parse(_response(_listing(ns)), shape)
    assert got == expected
    assert fast._converter(shape) is not None  # read by the compiled converters, not handed back to botocore
    assert got["Contents"][0]["ChecksumAlgorithm"] == ["SHA256", "CRC32"] and got["Contents"][1]["StorageClass"] == ""
    assert got["Contents"][1]["Key"] == "a/empty & <odd>" and got["IsTruncated"] is True and got["KeyCount"] == 2
    assert got["RequestCharged"] == "requester" and got["ResponseMetadata"]["RequestId"] == "r1"


def test_a_cut_short_listing_is_botocores_parse_error_which_is_retried() -> None:
    from botocore.parsers import ResponseParserError

    shape, body = _shape("ListObjectsV2"), _listing()[:-40]
    for parser in (RestXMLParser(), FastListingParser()):
        with pytest.raises(ResponseParserError, match=r"^Unable to parse response .*Further retries may succeed"):
            parser.parse(_response(body), shape)


def test_a_single_object_is_still_a_list_and_an_empty_listing_has_none() -> None:
    shape = _shape("ListObjectsV2")
    one = (f"<ListBucketResult{NS}><Name>bkt</Name><KeyCount>1</KeyCount><IsTruncated>false</IsTruncated>"
           "<Contents><Key>k</Key><Size>3</Size></Contents></ListBucketResult>").encode()
    empty = f"<ListBucketResult{NS}><Name>bkt</Name><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated></ListBucketResult>".encode()
    for body in (one, empty):
        assert FastListingParser().parse(_response(body), shape) == RestXMLParser().parse(_response(body), shape)
    assert FastListingParser().parse(_response(one), shape)["Contents"] == [{"Key": "k", "Size": 3}]
    assert "Contents" not in FastListingParser().parse(_response(empty), shape)


def test_errors_and_other_operations_are_botocores() -> None:
    error = b"<Error><Code>NoSuchBucket</Code><Message>gone</Message><RequestId>r1</RequestId></Error>"
    shape = _shape("ListObjectsV2")
    assert FastListingParser().parse(_response(error, 404), shape) == RestXMLParser().parse(_response(error, 404), shape)
    buckets = _shape("ListBuckets")
    body = f"<ListAllMyBucketsResult{NS}><Buckets><Bucket><Name>b1</Name></Bucket></Buckets></ListAllMyBucketsResult>".encode()
    assert FastListingParser().parse(_response(body), buckets) == RestXMLParser().parse(_response(body), buckets)


def test_the_factory_hands_it_out_for_s3_only() -> None:
    factory = FastListingParserFactory()
    factory.set_parser_defaults(timestamp_parser=str)
    assert type(factory.create_parser("rest-xml")) is FastListingParser
    assert type(factory.create_parser("json")) is not FastListingParser


def _emit_before_parse(store, operation: str, body: bytes, status: int = 200) -> dict:
    """The response as the client's own before-parse handlers leave it (what decides a retry)."""
    model = store.client.meta.service_model.operation_model(operation)
    response = {"status_code": status, "headers": {}, "body": body, "context": {}}
    store.client.meta.events.emit(f"before-parse.s3.{operation}", operation_model=model, response_dict=response,
                                  customized_response_dict={})
    return response


def test_a_whole_listing_page_is_not_parsed_twice_and_every_other_200_is_checked(monkeypatch) -> None:
    from botocore import handlers

    from lepton_core.store.objectstore import ObjectStore, StoreSettings

    store = ObjectStore(StoreSettings(endpoint_url="http://127.0.0.1:9", region="us-east-1",
                                      access_key_id="k", secret_access_key="s"))
    # botocore's second parse, counted wherever it is called from (its own handler or lepton's)
    parses = []
    second_parse = handlers._looks_like_special_case_error
    monkeypatch.setattr(handlers, "_looks_like_special_case_error", lambda *a: (parses.append(1), second_parse(*a))[1])
    whole = _listing()
    assert _emit_before_parse(store, "ListObjectsV2", whole)["status_code"] == 200
    assert _emit_before_parse(store, "ListObjectsV2", b"\n" + whole + b"\n")["status_code"] == 200
    assert parses == []  # passed without botocore's second parse
    # an error sent with status 200, and a page cut short: botocore's check, a 500 to retry
    error = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code><Message>x</Message></Error>'
    assert _emit_before_parse(store, "ListObjectsV2", error)["status_code"] == 500
    assert _emit_before_parse(store, "ListObjectsV2", whole[: len(whole) // 2])["status_code"] == 500
    assert _emit_before_parse(store, "ListObjectsV2", whole + b"<Error/>")["status_code"] == 500  # two roots
    assert len(parses) == 3  # once each: botocore's handler is not also still registered
    # other operations are botocore's check as before
    assert _emit_before_parse(store, "CopyObject", error)["status_code"] == 500 and len(parses) == 4


def test_the_factorys_parsers_share_converters_compiled_once_per_timestamp_reading() -> None:
    shape = _shape("ListObjectsV2")
    factory = FastListingParserFactory()
    factory.set_parser_defaults(timestamp_parser=str)
    first, second = factory.create_parser("rest-xml"), factory.create_parser("rest-xml")
    assert first.parse(_response(_listing()), shape) == second.parse(_response(_listing()), shape)
    assert first._converter(shape) is second._converter(shape)  # compiled by the first, reused by the second
    assert first.parse(_response(_listing()), shape)["Contents"][0]["LastModified"] == "2026-11-29T19:59:11.000Z"
    factory.set_parser_defaults(timestamp_parser=None)  # botocore's dates: converters compiled anew
    dated = factory.create_parser("rest-xml").parse(_response(_listing()), shape)
    assert dated == RestXMLParser().parse(_response(_listing()), shape)
    assert not isinstance(dated["Contents"][0]["LastModified"], str)
