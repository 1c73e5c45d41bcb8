# Titles of GBCS use cases / alerts by message code, for logs (see codes.py for sources).
# Kept apart from codes.py so that the relay's allow-list does not load them.
TITLES = """
0001 Add Device to CHF device log
0002 Remove device from CHF device log
0003 Restore CHF Device Log
0004 Read CHF device log / Check HAN communications (by reading the CHF Communications Store)
0007 Apply Pre-payment Top Up to an ESME
0008 Provide Security Credentials Details
000A Issue Security Credentials
000B Update Device Certificates on Device
000C Provide Device Certificates from Device
000D Method A Join (Meter)
000E Method B Join
000F Method A or C Unjoin
0010 Method B Unjoin
0012 Activate Firmware
0013 Read Device Join Details
0014 Read ZigBee Device Event Log
0015 Clear ZigBee Device Event Log
0018 Device Addition To / Removal From HAN Whitelist Alerts
0019 Set Tariff and Price on ESME
001A Set ESME Payment Mode to Credit
001B Set ESME Payment Mode to Pre-payment
001C Adjust Meter Balance on the ESME
001D Reset Tariff Block Counter Matrix
001E Manage Debt on the ESME
001F Update Pre-payment Configuration on ESME
0020 Activate Emergency Credit Remotely on ESME
0021 Send Message to ESME
0022 Set Change of Tenancy date on ESME
0023 Disable Privacy PIN Protection on ESME
0024 Clear ESME Event Log
0025 Write Supplier Contact Details on ESME
0026 Read ESME Energy Registers (Export Energy)
0027 Read ESME Energy Registers (Import Energy)
0028 Read ESME Energy Registers (Power)
0029 Read ESME Energy Register (TOU)
002A Read ESME Energy Register (TOU with Blocks)
002B Read Maximum Demand Registers (export)
002C Read Maximum Demand Registers (import)
002D Read ESME Pre-payment Registers
002E Read ESME Billing Data Log (payment based debt payments)
002F Read ESME Billing Data Log (change of mode / tariff triggered exc export)
0030 Read ESME Billing Data Log (billing calendar triggered exc export)
0033 Read Electricity Daily Read Log (exc export)
0034 Read Electricity (Pre-payment) Daily Read Log
0035 Read Electricity Daily Read Log (export only)
0036 Read Electricity Half Hour Profile Data (export)
0037 Read Electricity Half Hour Profile Data (active import)
0038 Read Electricity Half Hour Profile Data (reactive import)
0039 Read Voltage Operational Data
003A Read ESME Tariff Data
003B Read ESME Configuration Data Pre-payment
003C Read ESME Configuration Voltage Data
003D Read ESME Configuration Data Device Information (randomisation)
003E Read ESME Configuration Data Device Information (Billing Calendar)
003F Read ESME Configuration Data Device Information (device identity exc MPAN)
0040 Read ESME Configuration Data Device Information (instantaneous power thresholds)
0042 Read ESME Load Limit Data
0043 Set Load Limit Configurations - General Settings
0044 Set Load Limit Configuration Counter Reset
0045 Set Voltage Configurations on ESME
0046 Set Billing Calendar on the ESME
0047 Set Instantaneous Power Threshold Configuration
0048 Read ESME Event Log
0049 Read ESME Security Log
004A Set Maximum Demand Configurable Time Period
004B Update Randomised Offset Limit
004C Set MPAN Value on the ESME
004D Set Export MPAN Value on the ESME
004E Read MPAN Value on the ESME
004F Remotely Close the Load Switch on the ESME
0050 Remotely Open the Load Switch on the ESME
0051 Arm Load Switch in ESME
0052 Read Status of Load Switch in the ESME
0053 Set HC ALCS or ALCS Labels in ESME
0054 Set HC ALCS and ALCS configuration in ESME (excluding labels)
0055 Set or Reset HC ALCS or ALCS State
0058 Send CIN to ESME
0059 Read ESME/Comms Hub Firmware Version
005A Reset ESME Maximum Demand Registers
005E Read Boost Button Data from ESME
005F Set ALCS and Boost Button Association
0060 Read ESME Daily Consumption Log
0061 ESME Critical Sensitive Alert (Billing Data Log)
0062 Set Clock on ESME
0067 Supply Outage Restore Alert from ESME
0068 Set Supply Tamper State on ESME
0069 Read Meter Balance for ESME
006B Set Tariff and Price on GSME
006C Set GSME Payment Mode to Credit
006D Set GSME Payment Mode to Pre-payment
006E Manage Debt on the GSME
006F Update Pre-payment Configurations on GSME
0070 Activate Emergency Credit Remotely on GSME
0071 Send Message to GSME
0072 Set Change of Tenancy date on GPF
0073 Disable Privacy PIN Protection on GSME
0074 Read GSME Consumption Register
0075 Read GSME Pre-payment Register(s)
0076 Read GSME Billing Data Log (billing calendar triggered)
0077 Read GSME Daily Read log(s)
0078 Read GSME Profile Data Log
0079 Read Gas Network Data Log
007B Read Gas Configuration Data Device Information
007C Set CV and Conversion Factor Value(s) on the GSME
007D Set Uncontrolled Gas Flow Rate and Supply Tamper State on the GSME
007E Set Billing Calendar on the GSME
007F Set Clock on GSME
0080 Start Network Data Log on GSME
0081 Remotely close the valve in the GSME
0082 Read GSME Valve Status
0083 Send CIN to GSME
0084 Read GSME Firmware Version
0085 Arm Valve in GSME
0086 Adjust Pre-payment Mode Meter Balance on the GSME
0087 Set MPRN Value on the GSME
0088 Write Contact Details on GSME
0089 Read MPRN on the GSME
008B Push Billing Data Log as an Alert
008C Restore GPF Device Log
008D Read Meter Balance for GSME
0090 Activate Emergency Credit on GSME from PPMID
0092 Read Configuration Data Device Information (CHF identity)
0093 Read CHF Event Log
0094 Read CHF Security Log
0096 Read GSME Daily Read log(s) (pre-payment)
0097 Apply Pre-payment Top Up to a GSME
009B Apply Pre-payment Top Up to a GSME using PPMID
009D Read GSME Configuration Data Device Information (BillingCalendar)
009E Read GSME/GPF Configuration Data Device Information (device identity)
009F Read GSME Tariff Data
00A0 Read gas Daily Consumption Log
00A1 Read ZigBee Device Security Log
00A2 Set Price on ESME
00A3 Set Price on GSME
00AB Method A Join (non Meter)
00AC Set Alert Behaviours - ESME - Supplier
00AD Set Alert Behaviours - GSME
00AE Set Voltage Configurations on ESME - 3ph
00AF Method C Join
00B0 Set Alert Behaviours - ESME - Network Operator
00B2 Backup GPF Device Log
00B3 Reset Meter Balance on the ESME
00B4 Reset Pre-payment Mode Meter Balance on the GSME
00B5 Read GSME Configuration Data Pre-payment
00B6 Read GSME Register (TOU)
00B7 Set Tariff and Price on ESME secondary
00B8 Read GSME Block Counters
00B9 Read ESME Power Event Log
00BA Read ALCS Event Log
00BB Read HC ALCS and ALCS Data from ESME
00BC Read Voltage Operational Data -3 Phase
00BD Read ESME Tariff Data - second element
00BE Read ESME Configuration Data Device Information (Payment Mode)
00BF Read GSME Configuration Data Device Information (Payment Mode)
00C0 Adjust Credit Mode Meter Balance on the GSME
00C1 Clear ALCS Event Log
00C2 Reset Credit Mode Meter Balance on the GSME
00C3 Read GSME Billing Data Log (change of mode / tariff triggered)
00C4 Read GSME Billing Data Log (payment-based debt payments)
00C5 Read GSME Billing Data Log (pre-payment credits)
00C6 Read ESME Configuration Voltage Data - 3 phase
00C7 Set Price on ESME secondary
00C9 Read ESME Billing Data Log (pre-payment credits)
00CA Future Dated Firmware Activation Alert
00CB Future Dated Updated Security Credentials Alert
00CC Future Dated Execution Of Instruction Alert (DLMS COSEM)
00CD Future Dated Execution Of Instruction Alert (GBZ)
00CE Firmware Distribution Receipt Alert (ESME or Comms Hub)
00CF Firmware Distribution Receipt Alert (GSME)
00D1 Set Voltage Configurations on ESME without counter reset
00D2 Set Voltage Configurations on polyphase ESME without counter reset
00D3 Reset RMS Voltage Counters on ESME
00D4 Reset RMS Voltage Counters on polyphase ESME
00D5 Failure to Deliver Remote Party Message to ESME Alert
00D7 Set Billing Calendar on the ESME - all periodicities
00D8 Set Billing Calendar on the GSME - all periodicities
00D9 Read ESME Configuration Data Device Information (Billing Calendar - all periodicities)
00DA Read GSME Configuration Data Device Information (BillingCalendar - all periodicities)
00DB Configure daily resetting of Tariff Block Counter Matrix
00DE Update Pre-payment Configuration on ESME
00EA Set Event Behaviours - ESME to HAN Device - Supplier
00EB Set Event Behaviours - ESME audible alarm - Supplier
00EC Set Event Behaviours - ESME logging - Supplier
00ED Set Event Behaviours - ESME logging - Network Operator
00EE Read non-critical event and alert behaviours - ESME- Supplier
00EF Read non-critical event and alert behaviours - ESME- Network Operator
00F0 Meter Integrity Issue Warning Alert - ESME
00F1 Read non-critical event and alert behaviours - GSME- Supplier
00F2 Meter Integrity Issue Warning Alert - GSME
00F9 Read ESME Configuration Data Device Information (identity, type and supply tamper state)
00FA Read CHF Configuration Data Device Information (CH identity and type)
00FB Read GSME Configuration Data Device Information (identity, type and supply tamper / depletion state)
00FC Set Uncontrolled Gas Flow Rate at greater resolution and Supply Tamper State on the GSME
0100 Update Security Credentials - rootBySupplier
0101 Update Security Credentials - rootByWanProvider
0102 Update Security Credentials - supplierBySupplier
0103 Update Security Credentials - networkOperatorByNetworkOperator
0104 Update Security Credentials - accessControlBrokerByACB
0105 Update Security Credentials - wanProviderByWanProvider
0106 Update Security Credentials - transCoSByTransCoS
0107 Update Security Credentials - supplierByTransCoS
0108 Update Security Credentials - anyExceptAbnormalRootByRecovery
0109 Update Security Credentials - anyByContingency
010A Read CHF Sub GHz Channel
010B Read CHF Sub GHz Channel Log
010C Read CHF Sub GHz Configuration
010D Set CHF Sub GHz Configuration
010E Request CHF Sub GHz Channel Scan
010F Read CHF device log and check HAN communications
0110 Limited Duty Cycle Action Taken Sub GHz Alert
0111 Sub GHz Sub GHz Channel Changed Sub GHz Alert
0112 Sub GHz Channel Scan Request Assessment Outcome Sub GHz Alert
0113 Sub GHz Configuration Changed Sub GHz Alert
0114 Message Discarded Due to Duty Cycle Management Sub GHz Alert
0115 No More Sub GHz Device Capacity Sub GHz Alert
0116 Apply Pre-payment Top Up to an ESME using PPMID
0117 Activate Emergency Credit on ESME from PPMID
0118 Request to Enable ESME Supply from PPMID
0119 Request Control of a HAN Connected Auxiliary Load Control Switch from HCALCS
0129 Read PPMID/HCALCS Firmware Version
1000 Generic Critical Alert
1001 Generic Non Critical Alert
"""


def title(code):
    key = "\n%04X " % (code & 0xFFFF)
    i = TITLES.find(key)
    if i < 0:
        return ""
    j = TITLES.find("\n", i + 1)
    return TITLES[i + 6:j]
