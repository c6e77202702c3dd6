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
            "<EncodingType>url</EncodingType>" + "".join(objects)
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
