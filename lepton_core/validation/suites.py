"""Expectation suites built in code from a dataset's spec (GX Core 1.x).

Images are checked through two tables (see ``manifest``): ``images`` (every file decodes, is an
image of the declared size and mode, sits in an expected class, and no image's bytes appear under
two classes) and ``classes`` (every expected class folder exists in every split and is not
empty; no unexpected class folder). Tables are checked for columns, types, nulls, ranges, value
sets, key uniqueness and row count. Great Expectations is imported here, where it is used.
"""

from __future__ import annotations

from typing import Any

from lepton_core.spec.models import DatasetSpec

# GX compares pandas dtype names; pandas 3 strings are checked with ExpectColumnValuesToBeOfType("str").
TYPE_LISTS = {
    "int": ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "Int8", "Int16", "Int32", "Int64"],
    "float": ["float16", "float32", "float64", "Float32", "Float64"],
    "bool": ["bool", "boolean"],
    "datetime": ["datetime64", "datetime64[s]", "datetime64[ms]", "datetime64[us]", "datetime64[ns]"],
}


def image_expectations(dataset: DatasetSpec) -> dict[str, list[Any]]:
    """Expectations for the ``images`` and ``classes`` tables of an image dataset."""
    import great_expectations as gx

    E = gx.expectations
    images = [
        E.ExpectTableRowCountToBeBetween(min_value=1),
        E.ExpectColumnValuesToBeInSet(column="decodes", value_set=[True]),
        E.ExpectColumnValuesToBeBetween(column="classes_with_same_hash", max_value=1),
    ]
    classes = []  # root causes first: a missing folder also has no images, and the message names the first
    if dataset.classes is not None:
        images.append(E.ExpectColumnValuesToBeInSet(column="class", value_set=list(dataset.classes)))
        classes += [
            E.ExpectColumnValuesToBeInSet(column="folder_exists", value_set=[True]),
            E.ExpectColumnValuesToBeInSet(column="class", value_set=list(dataset.classes)),
        ]
    classes.append(E.ExpectColumnValuesToBeBetween(column="images", min_value=1))
    if dataset.splits:
        images.append(E.ExpectColumnValuesToBeInSet(column="split", value_set=list(dataset.splits)))
    if dataset.image_size is not None:
        w, h = dataset.image_size
        images += [E.ExpectColumnValuesToBeBetween(column="width", min_value=w, max_value=w, row_condition='decodes == True', condition_parser="pandas"),
                   E.ExpectColumnValuesToBeBetween(column="height", min_value=h, max_value=h, row_condition='decodes == True', condition_parser="pandas")]
    if dataset.image_mode is not None:
        images.append(E.ExpectColumnValuesToBeInSet(column="mode", value_set=[dataset.image_mode], row_condition='decodes == True',
                                                    condition_parser="pandas"))
    return {"images": images, "classes": classes}


def table_expectations(dataset: DatasetSpec) -> dict[str, list[Any]]:
    """Expectations for a table dataset, from its declared columns."""
    import great_expectations as gx

    E = gx.expectations
    out: list[Any] = [E.ExpectTableRowCountToBeBetween(min_value=1)]
    columns = dataset.columns or ()
    if columns:
        out.append(E.ExpectTableColumnsToMatchSet(column_set=[c.name for c in columns], exact_match=True))
    for c in columns:
        if c.dtype == "str":
            out.append(E.ExpectColumnValuesToBeOfType(column=c.name, type_="str"))
        else:
            out.append(E.ExpectColumnValuesToBeInTypeList(column=c.name, type_list=TYPE_LISTS[c.dtype]))
        if not c.nullable:
            out.append(E.ExpectColumnValuesToNotBeNull(column=c.name))
        if c.min is not None or c.max is not None:
            out.append(E.ExpectColumnValuesToBeBetween(column=c.name, min_value=c.min, max_value=c.max))
        if c.values is not None:
            out.append(E.ExpectColumnValuesToBeInSet(column=c.name, value_set=list(c.values)))
        if c.unique:
            out.append(E.ExpectColumnValuesToBeUnique(column=c.name))
    return {"table": out}
