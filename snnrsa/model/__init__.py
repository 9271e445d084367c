"""The model a rule trains: encoding -> backbone -> read-out (``Network``), and linear probes."""
